"""End to end: a signed batch over loopback to the Worker running in workerd.

The data points the Worker writes must equal what ``layout.encode`` gives for the same
events and what the embedded store holds after the local path stores them.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from worker_process import recorded_points, running_worker, signed_batch_request

from edgemetrics.events import Event, Job, PlayStart, Purchase, Refund, View, parse_event
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
