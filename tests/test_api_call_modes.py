"""Exclusions, head sampling with stored weight, and cost mode, on a real Starlette app."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from support import Captured

import edgemetrics
from edgemetrics.api_calls import ApiCallRecorder
from edgemetrics.asgi import EdgeMetricsMiddleware
from edgemetrics.layout import columns
from edgemetrics.sinks import StoreSink
from edgemetrics.store import EmbeddedStore


async def item(request: Any) -> PlainTextResponse:
    code = int(request.query_params.get("status", "200"))
    return PlainTextResponse("x" * 10, status_code=code)


def app(tmp_path: Any = None, **options: Any) -> EdgeMetricsMiddleware:
    routes: list[Any] = [
        Route("/items/{id}", item, methods=["GET", "OPTIONS"]),
        Route("/health", item),
    ]
    if tmp_path is not None:
        (tmp_path / "app.css").write_text("body{}")
        routes.append(Mount("/static", StaticFiles(directory=tmp_path)))
    return EdgeMetricsMiddleware(Starlette(routes=routes), **options)


def drive(asgi: Any, requests: list[tuple[str, str]]) -> list[int]:
    """Send requests straight into the ASGI app; returns the status codes."""

    async def run() -> list[int]:
        statuses = []
        for method, target in requests:
            path, _, query = target.partition("?")
            sent: list[dict[str, Any]] = []
            received: list[bool] = []

            async def receive(received: list[bool] = received) -> dict[str, Any]:
                if received:  # the body was read: the client stays until the response ends
                    await asyncio.Event().wait()
                received.append(True)
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
                sent.append(message)

            scope = {
                "type": "http", "method": method, "path": path, "raw_path": path.encode(),
                "query_string": query.encode(), "root_path": "", "headers": [], "scheme": "http",
                "server": ("test", 80), "http_version": "1.1",
            }  # fmt: skip
            await asgi(scope, receive, send)
            statuses.append(next(m["status"] for m in sent if m["type"] == "http.response.start"))
        return statuses

    return asyncio.run(run())


def test_excluded_paths_and_methods_are_not_recorded(tmp_path: Any, captured: Captured) -> None:
    asgi = app(tmp_path, exclude_paths=["/health", "/static/*"], exclude_methods=["options"])
    statuses = drive(
        asgi,
        [
            ("GET", "/health"),
            ("GET", "/static/app.css"),
            ("OPTIONS", "/items/1"),
            ("GET", "/items/1"),
        ],
    )
    assert statuses == [200, 200, 200, 200]
    assert [(c.method, c.route) for c in captured.api_calls()] == [("GET", "/items/{id}")]


def test_static_mount_gets_one_label(tmp_path: Any, captured: Captured) -> None:
    drive(app(tmp_path), [("GET", "/static/app.css"), ("GET", "/static/nope.css")])
    assert [(c.route, c.status_code) for c in captured.api_calls()] == [
        ("/static/{path}", 200),
        ("/static/{path}", 404),
    ]


def test_head_sampling_stores_the_weight(captured: Captured) -> None:
    random.seed(20261125)
    asgi = app(sample_rate=0.25)
    drive(asgi, [("GET", "/items/1")] * 2000)
    calls = captured.api_calls()
    assert 380 <= len(calls) <= 620  # about a quarter kept
    assert {c.calls for c in calls} == {4}
    assert 0.75 * 2000 <= sum(c.calls for c in calls) <= 1.25 * 2000


def test_cost_mode_aggregates_per_endpoint_status_class_and_minute(tmp_path: Any) -> None:
    store = EmbeddedStore(tmp_path / "em.duckdb")
    edgemetrics.configure(sink=StoreSink(store), flush_interval=0.05)
    try:
        requests = (
            [("GET", "/items/1")] * 200
            + [("GET", "/items/2?status=404")] * 30
            + [("GET", "/items/3?status=410")] * 20
            + [("GET", "/items/4?status=503")] * 7
        )
        drive(app(cost_mode=True), requests)
        assert edgemetrics.flush()
        col = columns("platform")
        rows = store.query(
            f"SELECT {col['status_code']} AS status, sum({col['calls']}) AS calls, "
            f"sum({col['errors']}) AS errors, count(*) AS points, "
            f"min({col['duration_min_ms']}) AS low, max({col['duration_max_ms']}) AS high, "
            f"sum({col['duration_ms']} * {col['calls']}) AS total_ms "
            f"FROM edgemetrics_platform WHERE {col['route']} = '/items/{{id}}' "
            "GROUP BY 1 ORDER BY 1"
        )
    finally:
        edgemetrics.shutdown()
        store.close()
    assert [(r["status"], r["calls"], r["errors"]) for r in rows] == [
        (200, 200, 0),
        (400, 50, 0),
        (500, 7, 7),
    ]
    # One row per status class and minute (two if the run straddled a minute boundary).
    assert all(1 <= r["points"] <= 2 for r in rows)
    assert all(0 <= r["low"] <= r["total_ms"] / r["calls"] <= r["high"] for r in rows)


def test_cost_mode_with_sampling_keeps_totals() -> None:
    recorder = ApiCallRecorder(cost_mode=True)
    for duration in (0.001, 0.003):
        record = (recorder, "GET", "/a", 200, 0.0, duration, 100, False, 10)
        assert recorder.build(record) is None
    (row,) = recorder.drain(force=True)
    assert (row.calls, row.duration_min_ms, row.duration_max_ms) == (20, 1.0, 3.0)
    assert row.duration_ms == pytest.approx(2.0) and row.response_bytes == 100
    assert recorder.drain(force=True) == []


def test_bad_options_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        ApiCallRecorder(sample_rate=0)
    with pytest.raises(ValueError, match="service"):
        ApiCallRecorder(service="")


def test_a_forked_child_never_ships_its_parents_open_aggregates() -> None:
    import os

    recorder = ApiCallRecorder(cost_mode=True)
    recorder.build((recorder, "GET", "/a", 200, 0.0, 0.001, 1, False, 1))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: reports how many aggregate rows it would ship
        os.write(write, str(len(recorder.drain(force=True))).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 16) == b"0"
    assert len(recorder.drain(force=True)) == 1  # the parent still has its own
