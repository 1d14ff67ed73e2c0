"""The thin pipeline end to end: track() -> buffer -> exporter thread -> sink -> store."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

import edgemetrics
from edgemetrics.asgi import UNMATCHED_ROUTE, EdgeMetricsMiddleware
from edgemetrics.client import Batch, Client
from edgemetrics.decorators import track_purchase
from edgemetrics.events import ApiCall, View
from edgemetrics.exporter import RetryPolicy
from edgemetrics.sinks import MemorySink, StoreSink
from edgemetrics.store import EmbeddedStore


class FailingSink(MemorySink):
    def write(self, batch: Batch) -> None:
        raise ConnectionError("sink down")


@pytest.fixture
def sink() -> MemorySink:
    memory = MemorySink()
    edgemetrics.configure(sink=memory, flush_interval=0.05)
    yield memory
    edgemetrics.shutdown()


def test_events_reach_the_store_in_batches_of_at_most_250(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "em.duckdb")
    client = Client(StoreSink(store), flush_interval=0.05)
    for i in range(1000):
        client.track(View(content_id=f"v{i % 7}", creator_id="c1"))
    assert client.flush()
    assert store.query("SELECT count(*) AS n FROM edgemetrics_content")[0]["n"] == 1000
    assert client.counters.batches >= 4 and client.counters.exported == 1000
    client.close()
    store.close()


def test_batches_never_exceed_max_batch() -> None:
    memory = MemorySink()
    client = Client(memory, flush_interval=10, max_batch=100)
    for i in range(550):
        client.track(View(content_id=f"v{i}"))
    assert client.flush()
    assert max(len(b.events) for b in memory.batches) <= 100
    assert len(memory.events) == 550
    client.close()


def test_without_a_spool_a_failing_sink_is_retried_then_the_batch_goes_to_the_hook() -> None:
    failed: list[Batch] = []
    client = Client(
        FailingSink(),
        flush_interval=0.05,
        retry=RetryPolicy(base=0.01, cap=0.02, max_attempts=3),
        on_failure=lambda b, e: failed.append(b),
    )
    client.track(View(content_id="v1"))
    assert client.flush()
    assert [e.content_id for b in failed for e in b.events] == ["v1"]
    assert client.counters.retries == 2  # three attempts in all
    assert client.counters.dropped_retries_exhausted == 1
    client.close()


def test_a_full_buffer_drops_and_counts_instead_of_blocking() -> None:
    gate = threading.Event()

    class SlowSink(MemorySink):
        def write(self, batch: Batch) -> None:
            gate.wait(5)
            super().write(batch)

    client = Client(SlowSink(), flush_interval=10, max_batch=10, max_buffer=50)
    for i in range(200):
        client.track(View(content_id=f"v{i}"))
    assert client.counters.dropped_buffer_full > 0
    gate.set()
    client.close()


def test_track_rejects_what_is_not_an_event(sink: MemorySink) -> None:
    with pytest.raises(TypeError, match="event"):
        edgemetrics.track({"type": "view"})  # type: ignore[arg-type]


async def test_middleware_records_route_templates_not_paths(sink: MemorySink) -> None:
    async def item(request):  # type: ignore[no-untyped-def]
        return JSONResponse({"id": request.path_params["item_id"]})

    async def broken(request):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    app = EdgeMetricsMiddleware(
        Starlette(routes=[Route("/items/{item_id}", item), Route("/broken", broken)]),
        service="shop",
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.get("/items/42?secret=x")).status_code == 200
        assert (await http.get("/nope/123")).status_code == 404
        assert (await http.get("/broken")).status_code == 500
    edgemetrics.flush()
    calls = [e for e in sink.events if isinstance(e, ApiCall)]
    assert [(c.route, c.status_code) for c in calls] == [
        ("/items/{item_id}", 200),
        (UNMATCHED_ROUTE, 404),
        ("/broken", 500),
    ]
    assert all("42" not in c.route and "secret" not in c.route for c in calls)
    assert calls[0].service == "shop" and calls[0].response_bytes > 0


def test_track_purchase_records_what_the_handler_returned(sink: MemorySink) -> None:
    @track_purchase(
        lambda r, *a, **k: (
            None
            if r["declined"]
            else {"amount_minor": r["amount"], "currency": "EUR", "transaction_id": r["tx"]}
        )
    )
    def pay(amount: int, declined: bool = False) -> dict:
        """Pay."""
        return {"amount": amount, "tx": f"tx-{amount}", "declined": declined}

    assert pay.__name__ == "pay" and pay.__doc__ == "Pay."
    pay(500)
    pay(700, declined=True)
    edgemetrics.flush()
    assert [(e.amount_minor, e.transaction_id) for e in sink.events] == [(500, "tx-500")]
