"""End to end: a signed batch over loopback to the Worker running in workerd.

The data points the Worker writes must equal what ``layout.encode`` gives for the same
events and what the embedded store holds after the local path stores them.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import SECRET as COLLECTOR_SECRET
from support import Collector
from vector_runner import errors_json, run_batch_events, run_collect_requests
from worker_process import recorded_points, running_worker, signed_batch_request

from edgemetrics.client import Client
from edgemetrics.enrich import salt_day
from edgemetrics.events import Event, Job, PlayStart, Purchase, Refund, View, parse_event
from edgemetrics.http_sink import HttpSink
from edgemetrics.layout import encode, point_from_row
from edgemetrics.store import DATASETS, EmbeddedStore

SECRET = "e2e-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def worker_url() -> Any:
    with running_worker(SECRET) as url:
        yield url


def _events() -> list[Event]:
    out: list[Event] = []
    for i in range(40):
        out.append(
            View(
                content_id=f"video-{i % 7}",
                creator_id=f"creator-{i % 3}",
                position=i * 0.5,
                country="DE",
                device_class="mobile",
                referrer_source="Google",
            )
        )
        out.append(
            PlayStart(
                content_id=f"video-{i % 7}",
                creator_id=f"creator-{i % 3}",
                authenticated=bool(i % 2),
                user_id=f"u{i}",
            )
        )
    out.append(
        Purchase(amount_minor=1299, currency="JPY", transaction_id="tx-77", creator_id="creator-1")
    )
    out.append(
        Refund(
            amount_minor=1299,
            currency="JPY",
            transaction_id="tx-78",
            original_transaction_id="tx-77",
        )
    )
    out.append(Job(job_name="transcode", duration_ms=5321.5, queue="media", retries=1))
    return out


def _as_tuple(point: dict[str, Any]) -> tuple[Any, ...]:
    return (
        point["dataset"],
        point["index1"],
        tuple(point["blobs"]),
        tuple(float(d) for d in point["doubles"]),
    )


def test_signed_batch_lands_as_the_python_side_encodes_it(worker_url: str, tmp_path: Path) -> None:
    events = _events()
    payload = [e.model_dump(mode="json") for e in events]
    body, headers = signed_batch_request(uuid.uuid4().hex, payload, SECRET)
    recorded_points(worker_url)
    response = httpx.post(worker_url + "v1/batch", content=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(events)
    got = [_as_tuple(p) for p in recorded_points(worker_url)["points"]]

    # What layout.encode gives for the same events, after the JSON round trip.
    expected = [encode(parse_event(p)) for p in payload]
    assert got == [
        (pt.dataset, pt.index1, pt.blobs, tuple(float(d) for d in pt.doubles)) for pt in expected
    ]

    # And what the embedded store holds for them, read back through its AE-shaped tables
    # (which pad to 20 blobs and 20 doubles, as AE returns them).
    store = EmbeddedStore(tmp_path / "e2e.duckdb")
    try:
        store.write(expected)
        stored = sorted(
            (table, p.index1, p.blobs, p.doubles)
            for table in DATASETS
            for p in (point_from_row(row) for row in store.query(f"SELECT * FROM {table}"))
        )
    finally:
        store.close()
    padded = sorted(
        (d, i, b + ("",) * (20 - len(b)), t + (0.0,) * (20 - len(t))) for d, i, b, t in got
    )
    assert stored == padded


def test_over_250_events_are_queued_and_all_written(worker_url: str) -> None:
    events = [View(content_id=f"v{i}", creator_id="c1", position=float(i)) for i in range(600)]
    payload = [e.model_dump(mode="json") for e in events]
    body, headers = signed_batch_request(uuid.uuid4().hex, payload, SECRET)
    recorded_points(worker_url)
    response = httpx.post(worker_url + "v1/batch", content=body, headers=headers, timeout=30)
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 30
    data = recorded_points(worker_url, reset=False)
    while len(data["points"]) < 600 and time.monotonic() < deadline:
        time.sleep(0.1)
        data = recorded_points(worker_url, reset=False)
    assert sorted(p["doubles"][3] for p in data["points"]) == [float(i) for i in range(600)]
    assert max(inv["writes"] for inv in data["invocations"]) <= 250


def test_replay_and_bad_signature_over_http(worker_url: str) -> None:
    payload = [View(content_id="v1").model_dump(mode="json")]
    batch_id = uuid.uuid4().hex
    body, headers = signed_batch_request(batch_id, payload, SECRET)
    assert (
        httpx.post(worker_url + "v1/batch", content=body, headers=headers).json()["accepted"] == 1
    )
    again = httpx.post(worker_url + "v1/batch", content=body, headers=headers).json()
    assert (again["duplicate"], again["accepted"]) == (True, 0)
    forged, forged_headers = signed_batch_request(uuid.uuid4().hex, payload, "not-the-secret")
    response = httpx.post(worker_url + "v1/batch", content=forged, headers=forged_headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "bad_signature"


# --- parity under generated input -------------------------------------------------------

_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**13), max_value=10**13),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from(
        [
            "",
            " 5 ",
            "5.0",
            "1e3",
            "yes",
            "off",
            "TRUE",
            "inf",
            "EUR",
            "eur",
            "XXY",
            "video",
            "2026-11-25T10:00:00Z",
            "2026-11-25T10:00:00",
            "2026-11-25 10:00:00.5+01:00",
            "-bad",
            "5.",
            ".5",
            "-5",
            "99999999999999999",
            "2026-02-30T10:00:00Z",
            "2026-11-25T10:00Z",
            "2026-11-25T10:00:00+2400",
            "0000-01-01T00:00:00Z",
            "2026-11-25T10:00:00.1234567Z",
            "0050-03-01T00:00:00-03:30",
            "a" * 65,
            "ok-id",
            "GET",
            "é" * 70,
        ]
    ),
    st.text(max_size=12),
)
_fields = st.sampled_from(
    [
        "content_id",
        "creator_id",
        "position",
        "watch_time",
        "authenticated",
        "timestamp",
        "currency",
        "amount_minor",
        "transaction_id",
        "content_type",
        "status_code",
        "duration_ms",
        "duration_min_ms",
        "method",
        "route",
        "unique_view",
        "country",
        "city",
        "retries",
        "outcome",
        "sample_rate",
        "event_id",
        "colour",
    ]
)
_generated_events = st.builds(
    lambda kind, fields: {"type": kind, "event_id": uuid.uuid4().hex, **fields},
    st.sampled_from(["view", "watch_time", "purchase", "api_call", "job", "pipeline_health"]),
    st.dictionaries(_fields, _values, max_size=6),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=st.lists(_generated_events, min_size=1, max_size=8))
def test_worker_and_python_agree_on_generated_events(
    worker_url: str, events: list[dict[str, Any]]
) -> None:
    """Random mixes of valid and invalid fields: same points, same rejections, both sides."""
    for event in events:
        event.setdefault("timestamp", "2026-11-25T10:00:00Z")
    expected = run_batch_events(events)
    body, headers = signed_batch_request(uuid.uuid4().hex, events, SECRET, compress=False)
    recorded_points(worker_url)
    response = httpx.post(worker_url + "v1/batch", content=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    got_rejected = [
        {"index": r["index"], "errors": errors_json((e["field"], e["rule"]) for e in r["errors"])}
        for r in answer["rejected"]
    ]
    assert got_rejected == expected["rejected"]
    got_points = [_as_tuple(p) for p in recorded_points(worker_url)["points"]]
    assert got_points == [_as_tuple(p) for p in expected["points"]]


_browser_events = st.builds(
    lambda kind, fields: {"type": kind, **fields},
    st.sampled_from(["view", "play_start", "pause", "watch_time", "abandon", "purchase"]),
    st.dictionaries(
        st.sampled_from(
            [
                "content_id",
                "creator_id",
                "content_type",
                "position",
                "watch_time",
                "age_ms",
                "timezone",
                "country",
                "media_duration",
            ]
        ),
        st.one_of(
            st.sampled_from(["v1", "v2", "c9", "video", "audio", "Europe/Berlin", "-x", "DE"]),
            st.integers(min_value=-5, max_value=4_000_000),
            st.floats(min_value=-1, max_value=1e6, allow_nan=False),
            st.none(),
        ),
        max_size=5,
    ),
)
_user_agents = st.sampled_from(
    [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "curl/8.0",
    ]
)
_referrers = st.sampled_from(
    [
        "",
        "https://www.google.fr/",
        "https://app.example.com/x",
        "https://l.facebook.com/",
        "ftp://a",
        "https://blog.example.org/p?q=1",
    ]
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    requests=st.lists(
        st.tuples(
            st.lists(_browser_events, min_size=1, max_size=6),
            _user_agents,
            _referrers,
            st.integers(min_value=0, max_value=3 * 3600 * 1000),
            st.sampled_from(["", "?utm_source=mail"]),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_worker_and_python_agree_on_generated_browser_requests(
    worker_url: str, requests: list[tuple[list[dict[str, Any]], str, str, int, str]]
) -> None:
    """Same browser requests to the Worker's and Python's /v1/collect: same points."""
    salt = uuid.uuid4().hex * 2
    ip = f"198.51.100.{len(requests)}"
    # A fresh UTC day per example: the Worker caches a day's salt in its isolate, so each
    # example seeds the salt of a day no earlier example touched.
    day_start = (20_000 + uuid.uuid4().int % 20_000) * 86_400_000
    base = day_start + 3600_000
    day = salt_day(base)
    seeded = httpx.put(worker_url + f"__test/kv?key=salt:{day}", content=salt)
    assert seeded.status_code == 204
    vector_requests = []
    now = base
    for events, ua, referrer, gap, query in requests:
        now += gap
        if now >= day_start + 86_400_000:  # stay inside the seeded salt's day
            break
        body = json.dumps(
            {"events": events, "url": "https://app.example.com/w" + query, "referrer": referrer}
        )
        vector_requests.append(
            {
                "now": now,
                "ip": ip,
                # Over HTTP Miniflare gives every request its sample request.cf.
                "cf": {"country": "US", "city": "Austin"},
                "headers": {"origin": "https://app.example.com", "user-agent": ua},
                "body": body,
            }
        )
    expected = run_collect_requests({day: salt}, vector_requests)
    recorded_points(worker_url)
    for req, want in zip(vector_requests, expected, strict=True):
        headers = {**req["headers"], "cf-connecting-ip": ip, "x-test-now": str(req["now"])}
        response = httpx.post(worker_url + "v1/collect", content=req["body"], headers=headers)
        assert response.status_code == want["status"], response.text
        got = recorded_points(worker_url)["points"]
        assert [_as_tuple(p) for p in got] == [_as_tuple(p) for p in want["points"]]
        if response.status_code == 200:
            rejected = [
                {
                    "index": r["index"],
                    "errors": errors_json((e["field"], e["rule"]) for e in r["errors"]),
                }
                for r in response.json()["rejected"]
            ]
            assert rejected == want["rejected"]


def test_the_exporter_sends_the_worker_what_the_local_collector_stores(
    worker_url: str, collector: Collector, tmp_path: Path
) -> None:
    """The real exporter (Client + HttpSink: batching, gzip, signature) ships the same
    events to the Worker in workerd and to the local collector; the data points the Worker
    writes equal the rows the collector stores."""
    events = [e for e in _events() if getattr(e, "user_id", None) is None]
    recorded_points(worker_url)
    collector.start()
    for url, secret in ((worker_url + "v1/batch", SECRET), (collector.url, COLLECTOR_SECRET)):
        client = Client(HttpSink(url, secret=secret), flush_interval=0.05, max_batch=25)
        for event in events:
            client.track(event)
        assert client.flush(30)
        assert client.counters.exported == len(events)
        client.close()
    assert collector.stats()["inserted"] == len(events)
    collector.stop()

    got = [_as_tuple(p) for p in recorded_points(worker_url)["points"]]
    padded = sorted(
        (d, i, b + ("",) * (20 - len(b)), t + (0.0,) * (20 - len(t))) for d, i, b, t in got
    )
    store = EmbeddedStore(collector.store_path, read_only=True)
    try:
        stored = sorted(
            (table, p.index1, p.blobs, p.doubles)
            for table in DATASETS
            for p in (point_from_row(row) for row in store.query(f"SELECT * FROM {table}"))
        )
    finally:
        store.close()
    assert len(got) == len(events)
    assert stored == padded
