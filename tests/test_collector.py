"""The local collector over loopback: every 4xx of the protocol, and nothing stored by them."""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from support import SECRET, Collector, free_port

from edgemetrics.signing import sign
from edgemetrics.wire import gzip_body


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    path: Path = tmp_path_factory.mktemp("collector") / "store.duckdb"
    c = Collector(path, free_port())
    c.start()
    yield c
    c.stop()


def body_of(events: list[dict[str, object]], batch_id: str | None = None) -> bytes:
    return orjson.dumps({"batch_id": batch_id or f"{time.time_ns():032x}", "events": events})


def post(
    c: Collector,
    body: bytes,
    *,
    secret: str = SECRET,
    gzip: bool = False,
    headers: dict[str, str] | None = None,
    timestamp: int | None = None,
) -> httpx.Response:
    sent = gzip_body(body) if gzip else body
    all_headers = {"Content-Type": "application/json", **sign(sent, secret, timestamp=timestamp)}
    if gzip:
        all_headers["Content-Encoding"] = "gzip"
    all_headers.update(headers or {})
    return httpx.post(c.url, content=sent, headers=all_headers, timeout=10)


def view(n: int, **extra: object) -> dict[str, object]:
    return {"type": "view", "content_id": f"v{n}", "event_id": f"{n:032x}", **extra}


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def test_a_good_gzipped_batch_is_written(running: Collector) -> None:
    r = post(running, body_of([view(1), view(2)]), gzip=True)
    assert r.status_code == 200
    assert r.json()["accepted"] == 2 and r.json()["rejected"] == []


def test_bad_events_are_listed_by_field_and_rule_and_the_good_ones_kept(running: Collector) -> None:
    events = [
        view(10),
        {"type": "telepathy", "event_id": f"{11:032x}"},
        {"type": "purchase", "amount_minor": -5, "currency": "EUR", "transaction_id": "t1"},
        {"type": "purchase", "amount_minor": 5, "currency": "XXY", "transaction_id": "t2"},
        view(12, timestamp="2026-01-01T00:00:00"),
        view(13, blob="unknown field"),
        view(14),
    ]
    r = post(running, body_of(events))
    assert r.status_code == 200
    answer = r.json()
    assert answer["accepted"] == 2
    by_index = {item["index"]: item for item in answer["rejected"]}
    assert sorted(by_index) == [1, 2, 3, 4, 5]
    assert by_index[1]["errors"][0]["field"] == "type"
    assert by_index[1]["event_id"] == f"{11:032x}"
    assert "telepathy" in by_index[1]["errors"][0]["message"]
    assert (by_index[2]["errors"][0]["field"], by_index[2]["errors"][0]["rule"]) == (
        "amount_minor",
        "greater_than_equal",
    )
    assert by_index[3]["errors"][0]["rule"] == "value_error"
    assert by_index[4]["errors"][0]["field"] == "timestamp"
    assert by_index[5]["errors"][0] == {
        "field": "blob",
        "rule": "extra_forbidden",
        "message": "Extra inputs are not permitted",
    }


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "malformed_json"),
        (b"[1, 2]", "bad_shape"),
        (b'{"batch_id": "nothex", "events": []}', "bad_shape"),
        (b'{"batch_id": "' + b"a" * 32 + b'", "events": {}}', "bad_shape"),
        (b'{"batch_id": "' + b"a" * 32 + b'", "events": [], "extra": 1}', "bad_shape"),
    ],
)
def test_malformed_bodies_get_400(running: Collector, body: bytes, code: str) -> None:
    r = post(running, body)
    assert r.status_code == 400
    assert error_code(r) == code


def test_a_corrupt_gzip_stream_gets_400(running: Collector) -> None:
    broken = gzip_body(body_of([view(1)]))[:-12]
    headers = {**sign(broken, SECRET), "Content-Encoding": "gzip"}
    r = httpx.post(running.url, content=broken, headers=headers)
    assert r.status_code == 400
    assert error_code(r) == "malformed_json"


def test_signature_problems_get_401(running: Collector) -> None:
    body = body_of([view(20)])
    assert error_code(httpx.post(running.url, content=body)) == "missing_signature"
    wrong = post(running, body, secret="not-the-secret")
    assert wrong.status_code == 401 and error_code(wrong) == "bad_signature"
    stale = post(running, body, timestamp=int(time.time()) - 301)
    assert stale.status_code == 401 and error_code(stale) == "stale_timestamp"
    future = post(running, body, timestamp=int(time.time()) + 400)
    assert error_code(future) == "stale_timestamp"
    # A valid signature over another body does not carry over.
    headers = sign(body_of([view(21)]), SECRET)
    tampered = httpx.post(running.url, content=body, headers=headers)
    assert tampered.status_code == 401 and error_code(tampered) == "bad_signature"


def test_oversized_batches_get_413(running: Collector) -> None:
    too_many = post(running, body_of([view(n) for n in range(5001)]), gzip=True)
    assert too_many.status_code == 413 and error_code(too_many) == "too_many_events"
    too_large = post(
        running, b'{"batch_id": "' + b"a" * 32 + b'", "events": ["' + b"x" * 2**20 + b'"]}'
    )
    assert too_large.status_code == 413 and error_code(too_large) == "too_large"
    bomb = zlib.compressobj(1, zlib.DEFLATED, 31)
    bomb_body = bomb.compress(b" " * (6 * 2**20)) + bomb.flush()
    headers = {**sign(bomb_body, SECRET), "Content-Encoding": "gzip"}
    inflated = httpx.post(running.url, content=bomb_body, headers=headers)
    assert inflated.status_code == 413 and error_code(inflated) == "too_large"


def test_an_unknown_content_encoding_gets_415(running: Collector) -> None:
    r = post(running, body_of([view(30)]), headers={"Content-Encoding": "br"})
    assert r.status_code == 415 and error_code(r) == "unsupported_encoding"


def test_a_replayed_batch_id_is_answered_duplicate_and_not_written_again(
    running: Collector,
) -> None:
    body = body_of([view(40), view(41)], batch_id="d" * 32)
    first = post(running, body).json()
    again = post(running, body).json()
    assert (first["accepted"], first["duplicate"]) == (2, False)
    assert (again["accepted"], again["duplicate"]) == (0, True)


def test_over_250_events_are_answered_202(running: Collector) -> None:
    r = post(running, body_of([view(1000 + n) for n in range(300)]), gzip=True)
    assert r.status_code == 202
    assert r.json()["accepted"] == 300


def test_answers_say_how_many_events_one_request_may_carry(running: Collector) -> None:
    # What lets the exporter send the local collector more than the Worker's 250.
    written = post(running, body_of([view(2000)]))
    duplicate = post(running, body_of([view(2001)], batch_id="e" * 32))
    again = post(running, body_of([view(2001)], batch_id="e" * 32))
    refused = post(running, body_of([view(2002)]), secret="wrong")
    for r in (written, duplicate, again):
        assert r.status_code == 200 and r.headers["X-Edgemetrics-Max-Events"] == "5000"
    assert again.json()["duplicate"] is True
    assert refused.status_code == 401 and "X-Edgemetrics-Max-Events" not in refused.headers


def test_openapi_describes_the_batch_endpoint(running: Collector) -> None:
    doc = httpx.get(running.url.replace("/v1/batch", "/openapi.json")).json()
    post_op = doc["paths"]["/v1/batch"]["post"]
    assert set(post_op["responses"]) == {"200", "202", "400", "401", "413", "415", "429"}
    assert "purchase" in doc["components"]["schemas"]


def test_after_all_the_bad_requests_the_store_holds_exactly_the_good_events(
    running: Collector,
) -> None:
    running.stop()
    stored = set(running.event_ids())
    running.start()
    expected = {f"{n:032x}" for n in (1, 2, 10, 14, 40, 41, *range(1000, 1300), 2000, 2001)}
    assert stored == expected


def test_an_answered_batch_survives_kill_9_of_the_collector(tmp_path: Path) -> None:
    c = Collector(tmp_path / "store.duckdb", free_port())
    c.start()
    try:
        events = [view(5000 + n) for n in range(2000)]
        answers = [post(c, body_of(events[i : i + 250]), gzip=True) for i in range(0, 2000, 250)]
        assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
        assert c.proc is not None
        c.proc.kill()  # SIGKILL right after the answers: the journal must hold them
        c.proc.wait()
        c.proc = None
        c.start()  # moves what the journal still holds
    finally:
        c.stop()
    assert set(c.event_ids()) == {f"{5000 + n:032x}" for n in range(2000)}


def test_extra_routes_are_served_beside_the_batch_endpoint(tmp_path: Path) -> None:
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from edgemetrics.collector import create_collector_app
    from edgemetrics.store import EmbeddedStore

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("collect here")

    store = EmbeddedStore(tmp_path / "x.duckdb")
    app = create_collector_app(
        store, secret=SECRET, extra_routes=[Route("/v1/collect", hello, methods=["POST"])]
    )
    with TestClient(app) as http:
        assert http.post("/v1/collect").text == "collect here"
        assert http.post("/v1/batch", content=b"{}").status_code == 401
    store.close()


def test_a_journal_left_by_the_earlier_collector_version_is_moved_at_start(
    tmp_path: Path,
) -> None:
    import pyarrow as pa

    from edgemetrics.spool import Spool
    from edgemetrics.store import COLUMNS

    # Before its journal became segment files, the collector kept accepted batches in a
    # SQLite spool beside the store, each row an Arrow IPC stream with a dataset column.
    store_path = tmp_path / "store.duckdb"
    ids = [f"{7000 + n:032x}" for n in range(3)]
    arrays = []
    for name in COLUMNS:
        if name == "event_id":
            arrays.append(pa.array(ids))
        elif name == "timestamp":
            now_ms = time.time_ns() // 1_000_000  # recent: retention keeps 90 days
            arrays.append(pa.array([now_ms] * 3, pa.timestamp("ms", tz="UTC")))
        elif name == "_sample_interval":
            arrays.append(pa.array([1] * 3, pa.uint32()))
        elif name.startswith("double"):
            arrays.append(pa.array([0.0] * 3))
        else:
            arrays.append(pa.array(["view" if name == "blob1" else ""] * 3))
    table = pa.Table.from_arrays(arrays, names=list(COLUMNS))
    table = table.append_column("dataset", pa.array(["edgemetrics_content"] * 3))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    spool = Spool(Path(str(store_path) + ".journal"), max_bytes=1 << 62)
    spool.put("a" * 32, sink.getvalue().to_pybytes(), events=3, critical=True, durable=True)
    spool.close()

    c = Collector(store_path, free_port())
    c.start()
    try:
        assert c.stats()["pending"] == 0
    finally:
        c.stop()
    assert sorted(c.event_ids()) == ids
    assert not list(Path(str(store_path) + ".journal").glob("spool.sqlite3*"))


def test_a_batch_sent_again_after_a_restart_is_stored_once(tmp_path: Path) -> None:
    c = Collector(tmp_path / "store.duckdb", free_port())
    c.start()
    try:
        # As the exporter sends them: each event with its id and its own timestamp.
        sent_at = datetime.now(UTC).isoformat()
        body = body_of([view(8000 + n, timestamp=sent_at) for n in range(20)])
        assert post(c, body, gzip=True).json()["accepted"] == 20
        c.stop()
        c.start()  # the collector forgot the batch id: only the store can tell
        again = post(c, body, gzip=True).json()
        assert (again["accepted"], again["duplicate"]) == (20, False)
        stats = c.stats()
        assert stats["inserted"] == 0
    finally:
        c.stop()
    assert sorted(c.event_ids()) == [f"{8000 + n:032x}" for n in range(20)]
