"""The Python /v1/collect and /tracker.js, mounted in a plain Starlette app over loopback."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from support import free_port
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


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, EmbeddedStore]]:
    store = EmbeddedStore(tmp_path / "collect.duckdb")
    settings = CollectSettings(allowed_origins=(ORIGIN,))
    app = Starlette(routes=routes(store, settings))
    port = free_port()
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


SID_TAB1 = "5d1c0e9a7b3f4a2c8e6d0f1b9a7c5e3d"
SID_TAB2 = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


def _post_body(url: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"origin": ORIGIN, "user-agent": UA, "content-type": "text/plain;charset=UTF-8"}
    return httpx.post(url + "/v1/collect", content=json.dumps(body), headers=headers, timeout=10)


def test_consent_mode_counts_sessions_by_the_browser_session_id(
    served: tuple[str, EmbeddedStore], tmp_path: Path
) -> None:
    """Two tabs of one browser (same IP and UA) are two sessions only in consent mode."""
    url, store = served
    view = {"type": "view", "content_id": "v1", "creator_id": "c1"}
    # Cookieless: the two tabs share the visitor hash, so one session.
    for _ in range(2):
        assert _post(url, [view]).json()["accepted"] == 1
    cookieless = _rows(store)
    assert [r[COL["new_session"]] for r in cookieless] == [1.0, 0.0]
    assert cookieless[0][COL["session_id"]] == cookieless[1][COL["session_id"]]
    # Consent given: each tab's session id is its own session, and a tab keeps its session.
    for sid in (SID_TAB1, SID_TAB2, SID_TAB1):
        body = {"events": [{**view, "session_id": sid}], "consent": "given"}
        assert _post_body(url, body).json() == {"accepted": 1, "rejected": []}
    consent = _rows(store)[2:]
    assert [r[COL["new_session"]] for r in consent] == [1.0, 1.0, 0.0]
    assert [r[COL["new_visitor"]] for r in consent] == [0.0, 0.0, 0.0]
    ids = [r[COL["session_id"]] for r in consent]
    assert ids[0] == ids[2] and len({ids[0], ids[1], cookieless[0][COL["session_id"]]}) == 3
    # The browser's id is stored nowhere: not in a cell, not in the file.
    assert all(
        SID_TAB1 not in str(v) and SID_TAB2 not in str(v) for r in consent for v in r.values()
    )
    data = b"".join(f.read_bytes() for f in tmp_path.iterdir() if f.is_file())
    assert SID_TAB1.encode() not in data and SID_TAB2.encode() not in data


def test_session_id_refused_without_consent_and_when_malformed(
    served: tuple[str, EmbeddedStore],
) -> None:
    url, store = served
    view = {"type": "view", "content_id": "v1"}
    without = _post_body(url, {"events": [{**view, "session_id": SID_TAB1}, view]})
    assert without.json()["accepted"] == 1
    assert without.json()["rejected"][0]["errors"][0] == {
        "field": "session_id",
        "rule": "browser_field",
        "message": 'set by the collector unless the request says "consent": "given"',
    }
    bad = _post_body(
        url, {"events": [{**view, "session_id": "ada@example.com"}], "consent": "given"}
    )
    assert [e["rule"] for e in bad.json()["rejected"][0]["errors"]] == ["browser_session"]
    # DNT and GPC win over consent.
    for header in ("dnt", "sec-gpc"):
        refused = httpx.post(
            url + "/v1/collect",
            content=json.dumps({"events": [{**view, "session_id": SID_TAB1}], "consent": "given"}),
            headers={"origin": ORIGIN, "user-agent": UA, header: "1"},
        )
        assert refused.status_code == 204
    assert len(_rows(store)) == 1


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
