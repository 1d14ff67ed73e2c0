"""The Python /v1/collect and /tracker.js, mounted in a plain Starlette app over loopback."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from worker_process import WORKER_DIR, need_worker_build

from edgemetrics.collect import CollectSettings, routes, tracker_source
from edgemetrics.layout import columns
from edgemetrics.store import EmbeddedStore

ORIGIN = "https://app.example.com"
UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36"
)
COL = columns("content")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, EmbeddedStore]]:
    store = EmbeddedStore(tmp_path / "collect.duckdb")
    settings = CollectSettings(allowed_origins=(ORIGIN,))
    app = Starlette(routes=routes(store, settings))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", store
    finally:
        server.should_exit = True
        thread.join(10)
        store.close()


def _post(url: str, events: Any, **headers: str) -> httpx.Response:
    h = {"origin": ORIGIN, "user-agent": UA, "content-type": "text/plain;charset=UTF-8"}
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    body = json.dumps({"events": events, "url": ORIGIN + "/v/1", "referrer": "https://t.co/x"})
    return httpx.post(url + "/v1/collect", content=body, headers=h, timeout=10)


def _rows(store: EmbeddedStore) -> list[dict[str, Any]]:
    return store.query("SELECT * FROM edgemetrics_content ORDER BY timestamp, event_id")


def test_browser_events_land_in_the_store_enriched(served: tuple[str, EmbeddedStore]) -> None:
    url, store = served
    events = [
        {"type": "view", "content_id": "v1", "creator_id": "c1", "age_ms": 500},
        {"type": "play_start", "content_id": "v1", "creator_id": "c1", "age_ms": 400},
    ]
    response = _post(url, events)
    assert response.status_code == 200
    assert response.json() == {"accepted": 2, "rejected": []}
    assert response.headers["access-control-allow-origin"] == ORIGIN
    rows = _rows(store)
    assert [r[COL["type"]] for r in rows] == ["view", "play_start"]
    view = rows[0]
    assert (view[COL["device_class"]], view[COL["browser"]], view[COL["os"]]) == (
        "mobile",
        "Chrome",
        "Android",
    )
    assert view[COL["referrer_source"]] == "X"
    # Without trusted proxy headers there is no geography, and the IP is never stored.
    assert view[COL["country"]] == ""
    assert all("127.0.0.1" not in str(v) and "Pixel" not in str(v) for v in view.values())
    assert (view[COL["unique_view"]], view[COL["new_visitor"]], view[COL["new_session"]]) == (
        1.0,
        1.0,
        1.0,
    )
    assert rows[1][COL["session_id"]] == view[COL["session_id"]]
    # A repeat view in the same session is not unique.
    _post(url, [{"type": "view", "content_id": "v1"}])
    assert _rows(store)[-1][COL["unique_view"]] == 0.0


def test_refusals_cors_dnt_bots_purchase_limits(served: tuple[str, EmbeddedStore]) -> None:
    url, store = served
    view = {"type": "view", "content_id": "v1"}
    assert _post(url, [view], origin="https://evil.example").status_code == 403
    assert _post(url, [view], dnt="1").status_code == 204
    assert _post(url, [view], sec_gpc="1").status_code == 204
    assert (
        _post(url, [view], user_agent="Googlebot/2.1 (+http://www.google.com/bot.html)").status_code
        == 204
    )
    assert _post(url, [view] * 51).status_code == 413
    purchase = {"type": "purchase", "amount_minor": 1, "currency": "EUR", "transaction_id": "t"}
    refused = _post(url, [purchase])
    assert refused.json()["rejected"][0]["errors"][0]["rule"] == "browser_type"
    bad = httpx.post(
        url + "/v1/collect", content=b"{nope", headers={"origin": ORIGIN, "user-agent": UA}
    )
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "malformed_json")
    big = httpx.post(
        url + "/v1/collect", content=b" " * 20_000, headers={"origin": ORIGIN, "user-agent": UA}
    )
    assert (big.status_code, big.json()["error"]["code"]) == (413, "too_large")
    preflight = httpx.options(url + "/v1/collect", headers={"origin": ORIGIN})
    assert preflight.status_code == 204
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert _rows(store) == []
    assert store.query("SELECT count(*) AS n FROM edgemetrics_commerce")[0]["n"] == 0


def test_tracker_js_is_served(served: tuple[str, EmbeddedStore]) -> None:
    url, _ = served
    response = httpx.get(url + "/tracker.js")
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    assert response.text == tracker_source()


def test_packaged_tracker_is_the_fresh_build() -> None:
    """src/edgemetrics/static/tracker.js must equal a fresh build of worker/tracker/.

    ``npm run build`` in worker/ refreshes the packaged copy; the test build does not.
    """
    need_worker_build()  # builds worker/dist/ from source, leaving the packaged copy alone
    built = (WORKER_DIR / "dist" / "tracker.js").read_text()
    assert tracker_source() == built, "stale packaged tracker: run `npm run build` in worker/"
    assert len(gzip.compress(built.encode(), 9)) <= 2048


def test_origin_patterns() -> None:
    settings = CollectSettings(allowed_origins=("https://*.creators.example", "https://a.example"))
    assert settings.origin_allowed("https://bob.creators.example")
    assert not settings.origin_allowed("https://evilcreators.example")
    assert not settings.origin_allowed("http://bob.creators.example")
    assert not settings.origin_allowed(None)
    assert CollectSettings(allowed_origins=("*",)).origin_allowed("https://any.example")
