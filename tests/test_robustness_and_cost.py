"""Instrumentation failures never reach the request; `edgemetrics cost` answers and refuses."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from support import Captured
from test_api_call_modes import drive

from edgemetrics.api_calls import UNMATCHED_ROUTE
from edgemetrics.asgi import EdgeMetricsMiddleware
from edgemetrics.cost import add_command
from edgemetrics.wsgi import EdgeMetricsWSGIMiddleware


async def ok(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


def test_a_raising_authenticated_hook_never_breaks_the_request(captured: Captured) -> None:
    def broken(scope: Any) -> bool:
        raise RuntimeError("hook bug")

    app = EdgeMetricsMiddleware(Starlette(routes=[Route("/a", ok)]), authenticated=broken)
    assert drive(app, [("GET", "/a")]) == [200]
    (call,) = captured.api_calls()
    assert (call.route, call.authenticated) == ("/a", False)


def test_a_raising_route_reader_falls_back_to_the_shared_label(captured: Captured) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("content-length", "2")])
        return [b"ok"]

    def broken_route(environ: dict[str, Any]) -> str:
        raise KeyError("no rule")

    wrapped = EdgeMetricsWSGIMiddleware(app, route=broken_route)
    body = wrapped({"REQUEST_METHOD": "GET", "PATH_INFO": "/x"}, lambda *a: None)
    assert b"".join(body) == b"ok"
    body.close()  # type: ignore[attr-defined]
    (call,) = captured.api_calls()
    assert (call.route, call.status_code, call.response_bytes) == (UNMATCHED_ROUTE, 200, 2)


def test_made_up_methods_are_stored_as_other(captured: Captured) -> None:
    app = EdgeMetricsMiddleware(Starlette(routes=[Route("/a", ok)]))
    drive(app, [("M-SEARCH", "/a")])
    (call,) = captured.api_calls()
    assert (call.method, call.status_code) == ("OTHER", 405)


def cost(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="edgemetrics")
    add_command(parser.add_subparsers())
    args = parser.parse_args(["cost", *argv])
    return int(args.func(args))


def test_cost_compares_the_three_modes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cost("--requests-per-day", "10000000", "--endpoints", "50") == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[3:]}
    assert rows["per-request"][1] == "304,375,000" and rows["per-request"][3] == "73.59"
    assert rows["sampled"][3] == "5.11" and rows["cost"][3] == "1.88"
    assert "2026-11-25" in out and "$0.25/M points" in out


def test_cost_refuses_bad_input_naming_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert cost("--requests-per-day", "1000", "--sample-rate", "2") == 2
    assert "--sample-rate" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cost("--requests-per-day", "-5")
    assert "must be >= 0" in capsys.readouterr().err
