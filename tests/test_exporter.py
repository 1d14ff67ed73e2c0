"""The exporter against a real loopback receiver that can be told to fail."""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from strategies import any_event_dict
from support import free_port

import edgemetrics
from edgemetrics.client import Client
from edgemetrics.events import InvalidEvent, PipelineHealth, View
from edgemetrics.exporter import RetryPolicy
from edgemetrics.http_sink import HttpSink
from edgemetrics.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from edgemetrics.spool import Spool
from edgemetrics.spool_command import status_command
from edgemetrics.wire import encode_events, gunzip_body

SECRET = "exporter-secret"


@dataclass
class Receiver:
    """Records each request; answers from ``script`` (status, headers) then 200."""

    url: str = ""
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            ok = [r for r in self.requests if r["status"] == 200]
        return [e for r in ok for e in r["body"]["events"]]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    async def batch(request: Request) -> Response:
        raw = await request.body()
        verify(
            raw,
            request.headers.get(TIMESTAMP_HEADER),
            request.headers.get(SIGNATURE_HEADER),
            SECRET,
        )
        assert request.headers["content-encoding"] == "gzip"
        body = orjson.loads(gunzip_body(raw))
        with rec.lock:
            status, headers = rec.script.pop(0) if rec.script else (200, {})
            rec.requests.append({"time": time.monotonic(), "status": status, "body": body})
        answer = {"batch_id": body["batch_id"], "accepted": len(body["events"]), "rejected": []}
        return Response(orjson.dumps(answer), status_code=status, headers=headers)

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/v1/batch", batch, methods=["POST"])]),
            host="127.0.0.1",
            port=port,
            log_level="error",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    rec.url = f"http://127.0.0.1:{port}/v1/batch"
    yield rec
    server.should_exit = True
    thread.join(5)


def make_client(rec: Receiver, **options: Any) -> Client:
    options.setdefault("flush_interval", 0.05)
    options.setdefault("health_interval", None)
    options.setdefault("retry", RetryPolicy(base=0.05, cap=0.2))
    return Client(HttpSink(rec.url, secret=SECRET), **options)


def test_batches_hold_at_most_250_events_and_respect_the_byte_bound(receiver: Receiver) -> None:
    client = make_client(receiver, flush_interval=5.0)
    for n in range(600):
        client.track(View(content_id=f"v{n}"))
    assert client.flush(10)
    sizes = [len(r["body"]["events"]) for r in receiver.requests]
    assert sum(sizes) == 600 and max(sizes) <= 250
    client.close()

    small = make_client(receiver, max_batch_bytes=2000)
    receiver.requests.clear()
    for n in range(100):
        small.track(View(content_id=f"v{n}"))
    assert small.flush(10)
    sizes = [len(r["body"]["events"]) for r in receiver.requests]
    assert sum(sizes) == 100 and len(sizes) > 1
    assert max(len(orjson.dumps(r["body"]["events"])) for r in receiver.requests) <= 2000
    small.close()


def test_an_event_tracked_alone_is_sent_within_the_flush_interval(receiver: Receiver) -> None:
    client = make_client(receiver, flush_interval=0.2)
    client.track(View(content_id="lonely"))
    deadline = time.monotonic() + 5
    while not receiver.events() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [e["content_id"] for e in receiver.events()] == ["lonely"]
    client.close()


def test_retries_keep_batch_and_event_ids_and_honour_retry_after(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.script = [(503, {}), (429, {"Retry-After": "1"})]
    client = make_client(receiver, spool=tmp_path)
    client.track(View(content_id="v1"))
    client.track(View(content_id="v2"))
    deadline = time.monotonic() + 10
    while len(receiver.requests) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    client.close()
    attempts = receiver.requests
    assert [a["status"] for a in attempts] == [503, 429, 200]
    assert len({a["body"]["batch_id"] for a in attempts}) == 1
    ids = [[e["event_id"] for e in a["body"]["events"]] for a in attempts]
    assert ids[0] == ids[1] == ids[2]
    assert attempts[2]["time"] - attempts[1]["time"] >= 0.95  # Retry-After: 1
    assert client.counters.retries >= 2
    assert client.counters.exported == 2


def test_a_4xx_is_not_retried_and_is_counted(receiver: Receiver, tmp_path: Path) -> None:
    receiver.script = [(400, {})]
    client = make_client(receiver, spool=tmp_path)
    client.track(View(content_id="v1"))
    assert client.flush(5)
    time.sleep(0.3)
    client.close()
    assert len(receiver.requests) == 1
    assert client.counters.dropped_invalid == 1
    spool = Spool(tmp_path)
    assert spool.stats().batches == 0
    spool.close()


def test_without_a_spool_a_batch_is_retried_in_memory_then_dropped_and_counted(
    receiver: Receiver,
) -> None:
    receiver.script = [(503, {})] * 10
    lost: list[int] = []
    client = make_client(
        receiver,
        retry=RetryPolicy(base=0.01, cap=0.02, max_attempts=3),
        on_failure=lambda batch, exc: lost.append(len(batch)),
    )
    client.track(View(content_id="v1"))
    assert client.flush(5)
    client.close()
    assert len(receiver.requests) == 3
    assert lost == [1]
    assert client.counters.dropped_retries_exhausted == 1


def test_close_does_not_wait_out_a_long_backoff_and_spools_the_rest(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.script = [(503, {})]
    client = make_client(receiver, spool=tmp_path, retry=RetryPolicy(base=600, cap=600))
    client.track(View(content_id="v1"))
    assert client.flush(5)
    for n in range(10):
        client.track(View(content_id=f"later{n}"))
    started = time.monotonic()
    client.close(timeout=1.0)
    assert time.monotonic() - started < 5  # not 600 s
    spool = Spool(tmp_path)
    assert spool.stats().events == 11
    spool.close()


def test_the_pipeline_reports_its_own_health(
    receiver: Receiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = make_client(receiver, spool=tmp_path, health_interval=0.2)
    for n in range(5):
        client.track(View(content_id=f"v{n}"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        health = [e for e in receiver.events() if e["type"] == "pipeline_health"]
        if health and health[-1]["events_exported"] >= 5:
            break
        time.sleep(0.05)
    client.close()
    assert health[-1]["source"] == "exporter"
    assert health[-1]["batches"] >= 1
    assert isinstance(client.health(), PipelineHealth)
    # The same counters are left in the spool for `edgemetrics spool status`.
    assert status_command(argparse.Namespace(dir=str(tmp_path), json=False)) == 0
    out = capsys.readouterr().out
    assert f"process {os.getpid()} (running" in out
    assert "export latency" in out and "dropped: none" in out


def test_track_refuses_what_is_not_an_event_and_a_bad_field_fails_at_once() -> None:
    with pytest.raises(TypeError, match="event: expected an edgemetrics event model"):
        edgemetrics.track({"type": "view"})  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent, match="position"):
        View(content_id="v1", position=-1)


def test_a_purchase_through_the_decorator_is_in_the_spool_when_the_handler_returns(
    tmp_path: Path,
) -> None:
    from edgemetrics.decorators import track_purchase

    # The sink is down (nothing on port 9) and the exporter backs off for a long time.
    edgemetrics.configure(
        sink=HttpSink("http://127.0.0.1:9/v1/batch", secret="s", timeout=0.2),
        spool=tmp_path,
        flush_interval=30,
        retry=RetryPolicy(base=600, cap=600),
        health_interval=None,
    )

    @track_purchase(lambda result: result)
    def buy() -> dict[str, Any]:
        return {"amount_minor": 999, "currency": "USD", "transaction_id": "tx-9"}

    buy()
    spool = Spool(tmp_path)
    try:
        stats = spool.stats()
        assert stats.critical_events == 1
    finally:
        spool.close()
        edgemetrics.shutdown(timeout=0.5)


def test_requests_reach_an_http_sink_in_wire_form_equal_to_the_models(
    receiver: Receiver,
) -> None:
    """For a sink that sends bodies the middleware's records skip the model: what arrives
    must be what the model would have said."""
    from starlette.responses import PlainTextResponse
    from starlette.testclient import TestClient

    from edgemetrics.asgi import EdgeMetricsMiddleware
    from edgemetrics.events import ApiCall, parse_event
    from edgemetrics.sinks import MemorySink

    async def item(request: Request) -> Response:
        return PlainTextResponse("x" * 7, status_code=201)

    app = EdgeMetricsMiddleware(
        Starlette(routes=[Route("/items/{id}", item, methods=["POST"])]), service="shop"
    )
    edgemetrics.configure(sink=HttpSink(receiver.url, secret=SECRET), flush_interval=0.05)
    try:
        with TestClient(app) as http:
            for n in range(3):
                http.post(f"/items/{n}?token=secret")
        edgemetrics.track(View(content_id="v1"))
        assert edgemetrics.flush(10)
    finally:
        edgemetrics.shutdown()
    sent = receiver.events()
    calls = [parse_event(e) for e in sent if e["type"] == "api_call"]
    assert [e["content_id"] for e in sent if e["type"] == "view"] == ["v1"]
    assert len(calls) == 3 and len({c.event_id for c in calls}) == 3
    for call in calls:
        assert isinstance(call, ApiCall)
        assert (call.service, call.method, call.route, call.status_code) == (
            "shop", "POST", "/items/{id}", 201,
        )  # fmt: skip
        assert call.response_bytes == 7 and call.calls == 1 and call.duration_ms > 0
        assert call.duration_min_ms == call.duration_max_ms == call.duration_ms

    # The same records built as models (an in-process sink) give the same events.
    sink = MemorySink()
    edgemetrics.configure(sink=sink, flush_interval=0.05)
    try:
        with TestClient(app) as http:
            http.post("/items/9")
        assert edgemetrics.flush(10)
    finally:
        edgemetrics.shutdown()
    (model,) = sink.events
    assert isinstance(model, ApiCall)
    wire_form = calls[0].model_dump(
        exclude={"event_id", "timestamp", "duration_ms", "duration_min_ms", "duration_max_ms"}
    )
    assert (
        model.model_dump(
            exclude={"event_id", "timestamp", "duration_ms", "duration_min_ms", "duration_max_ms"}
        )
        == wire_form
    )


class GatedLocalSink:
    """Takes batches in-process like MemorySink, says it takes 5,000 events a request (as
    the local collector's answers do), and holds its first write until ``gate`` opens."""

    reads = "events"
    max_events = 5000

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.events: list[View] = []
        self.gate = threading.Event()

    def write(self, batch: Any) -> None:
        if not self.sizes:
            assert self.gate.wait(10)
        self.sizes.append(len(batch))
        self.events.extend(batch.events)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("max_batch", [None, 250])
def test_a_backlog_goes_in_larger_requests_to_a_receiver_that_takes_them(
    max_batch: int | None,
) -> None:
    sink = GatedLocalSink()
    client = Client(
        sink, flush_interval=10, max_batch=max_batch, max_in_flight=1, health_interval=None
    )
    views = [View(content_id=f"v{n}") for n in range(5000)]
    # The exporter's first write waits: at least 3,000 are buffered behind it.
    for event in views:
        client.track(event)
    sink.gate.set()
    assert client.flush(10)
    client.close()
    assert sorted(e.event_id for e in sink.events) == sorted(e.event_id for e in views)
    # At most NEGOTIATED_BATCH (2,000) a request; a max_batch given is kept to.
    assert max(sink.sizes) == (2000 if max_batch is None else 250)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=any_event_dict, ids=st.lists(st.integers(0, 2**60), min_size=1, max_size=5))
def test_a_batch_of_events_built_alike_is_sent_as_encode_events_sends_it(
    data: dict[str, Any], ids: list[int]
) -> None:
    # The exporter's encoding of a batch of one model built alike (_encode_alike) must
    # say what wire.encode_events says: the same keys in the same order, the same events.
    from edgemetrics.events import EVENT_TYPES, parse_event
    from edgemetrics.exporter import _encode_alike

    cls = EVENT_TYPES[data["type"]]
    fields = {k: v for k, v in data.items() if k not in ("type", "event_id")}
    try:
        events = [cls(**fields, event_id=f"{n:032x}") for n in ids]
    except InvalidEvent:
        return  # the strategy's values may break a cross-field rule; nothing to send
    ours = _encode_alike(events)
    theirs = encode_events(events)
    if ours is None:  # not built alike (pydantic's own build): encode_events sends them
        return
    mine, reference = orjson.loads(ours), orjson.loads(theirs)
    assert [list(e) for e in mine] == [list(e) for e in reference]
    assert [parse_event(e) for e in mine] == [parse_event(e) for e in reference]


def test_events_built_alike_take_the_batch_encoding() -> None:
    from edgemetrics.exporter import _encode_alike

    views = [View(content_id="v1", creator_id="c1", position=n) for n in range(3)]
    assert _encode_alike(views) is not None
    other = View(creator_id="c1", content_id="v9")  # other given names: another fields set
    assert _encode_alike([*views, other]) is None
