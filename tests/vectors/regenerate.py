"""Rewrite the shared ingest vectors from the cases below (``python tests/vectors/regenerate.py``).

The expected data points come from the Python side (``parse_event`` + ``layout.encode`` for
batches, :func:`edgemetrics.collect.collect_events` behind the real route for browsers);
the Worker's ``npm test`` and ``tests/test_vectors.py`` both check them. Review the diff of
the JSON files when a case or a rule changes: that diff is the behaviour change.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from vector_runner import point_json, run_batch_events, run_collect_requests  # noqa: E402

T0 = "2026-11-25T10:00:00Z"
EID = [f"{i:032x}" for i in range(1, 200)]

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/125.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
ORIGIN = "https://app.example.com"
NOW = 1_795_600_000_000  # 2026-11-25T08:26:40Z
MIN = 60_000
# Consent-mode browser session ids as the tracker makes them (32 lowercase hex digits).
SID_A = "0f3a9c4e7b2d4f1a8c6e0b9d3a7f5e21"
SID_B = "c0ffee00deadbeef0123456789abcdef"

BATCH_CASES: dict[str, list[Any]] = {
    "batch_valid": [
        {
            "type": "view",
            "event_id": EID[0],
            "timestamp": T0,
            "content_id": "video-1",
            "content_type": "video",
            "creator_id": "creator-7",
            "session_id": "s1",
            "user_id": "u1",
            "authenticated": True,
            "country": "DE",
            "city": "Berlin",
            "device_class": "desktop",
            "browser": "Firefox",
            "browser_version": "128",
            "os": "Linux",
            "referrer_source": "Google",
            "timezone": "Europe/Berlin",
            "position": 12.25,
            "media_duration": 300,
            "unique_view": True,
            "new_visitor": True,
            "new_session": True,
        },
        {"type": "play_start", "event_id": EID[1], "timestamp": T0, "content_id": "a/2"},
        {
            "type": "watch_time",
            "event_id": EID[2],
            "timestamp": T0,
            "content_id": "a/2",
            "watch_time": 9.5,
        },
        {
            "type": "purchase",
            "event_id": EID[3],
            "timestamp": T0,
            "amount_minor": 499,
            "currency": "EUR",
            "transaction_id": "tx-1",
            "creator_id": "creator-7",
            "content_id": "video-1",
        },
        {
            "type": "refund",
            "event_id": EID[4],
            "timestamp": T0,
            "amount_minor": 499,
            "currency": "EUR",
            "transaction_id": "tx-2",
            "original_transaction_id": "tx-1",
        },
        {
            "type": "api_call",
            "event_id": EID[5],
            "timestamp": T0,
            "method": "GET",
            "route": "/v1/items/{id}",
            "status_code": 200,
            "duration_ms": 12.5,
        },
        {
            "type": "api_call",
            "event_id": EID[6],
            "timestamp": T0,
            "service": "api",
            "method": "POST",
            "route": "/v1/orders",
            "status_code": 503,
            "duration_ms": 40,
            "calls": 10,
            "duration_min_ms": 3,
            "duration_max_ms": 90,
            "errors": 2,
            "response_bytes": 1024,
        },
        {
            "type": "job",
            "event_id": EID[7],
            "timestamp": T0,
            "job_name": "encode",
            "duration_ms": 1500,
            "outcome": "retry",
            "retries": 2,
        },
        {
            "type": "queue_delay",
            "event_id": EID[8],
            "timestamp": T0,
            "queue": "media",
            "delay_ms": 5,
            "depth": 3,
        },
        {
            "type": "db_query",
            "event_id": EID[9],
            "timestamp": T0,
            "fingerprint": "SELECT * FROM items WHERE id = ?",
            "operation": "SELECT",
            "duration_ms": 0.75,
            "rows": 1,
        },
        {
            "type": "error",
            "event_id": EID[10],
            "timestamp": T0,
            "error_type": "KeyError",
            "route": "/x",
        },
        {
            "type": "pipeline_health",
            "event_id": EID[11],
            "timestamp": T0,
            "source": "exporter",
            "events_in": 100,
            "events_exported": 98,
            "dropped_invalid": 2,
            "export_latency_ms": 35.5,
            "sample_rate": 0.5,
        },
    ],
    "batch_coercion": [
        # pydantic's lax JSON coercions, which the Worker reproduces.
        {
            "type": "purchase",
            "event_id": EID[20],
            "timestamp": "2026-11-25T11:00:00.123999+01:00",
            "amount_minor": "250",
            "currency": "USD",
            "transaction_id": "t9",
            "authenticated": "yes",
        },
        {
            "type": "view",
            "event_id": EID[21],
            "timestamp": 1795600000,
            "content_id": "v",
            "position": "1.5",
        },
        {
            "type": "view",
            "event_id": EID[22],
            "timestamp": 1795600000123,
            "content_id": "v",
            "unique_view": 1,
            "new_session": "false",
            "media_duration": True,
        },
        {
            "type": "job",
            "event_id": EID[23],
            "timestamp": "2026-11-25 10:00:00.5-0230",
            "job_name": "j",
            "duration_ms": "  7 ",
            "retries": 3.0,
        },
        {
            "type": "api_call",
            "event_id": EID[24],
            "timestamp": T0,
            "method": "GET",
            "route": "/",
            "status_code": "404",
            "duration_ms": 2,
            "duration_min_ms": None,
            "duration_max_ms": 5,
        },
        {
            "type": "view",
            "event_id": EID[25],
            "timestamp": T0,
            "content_id": "v",
            "creator_id": None,
            "content_type": None,
            "authenticated": "TRUE",
        },
    ],
    "batch_timestamps": [
        # The Worker parses the exporter's canonical form without a regex; these pin both paths.
        {"type": "view", "event_id": EID[60], "content_id": "v", "timestamp": ts}
        for ts in (
            "2024-02-29T23:59:59.9Z",
            "2026-11-25T10:00:00.12Z",
            "2026-11-25T10:00:00.123456789Z",
            "2026-11-25T10:00:00+00:00",
            "2026-11-25t10:00:00z",
            "0099-12-31T23:59:59Z",
            "1969-12-31T23:59:59.999Z",
            "2025-02-29T00:00:00Z",
            "2026-11-25T10:00:00.Z",
            "2026-11-25T10:00:00.5",
            "1795600000.5",
            -1.5,
        )
    ],
    # The PII guard (edgemetrics.pii / worker/src/pii.ts): refused in ids and labels,
    # stripped from routes, fingerprints and referrers.
    "batch_pii": [
        {
            "type": "view",
            "event_id": EID[80],
            "timestamp": T0,
            "content_id": "v",
            "user_id": "ada@example.com",
        },
        {
            "type": "view",
            "event_id": EID[81],
            "timestamp": T0,
            "content_id": "v",
            "session_id": "203.0.113.7",
            "city": "call (415) 555-2671",
        },
        {
            "type": "view",
            "event_id": EID[82],
            "timestamp": T0,
            "content_id": "2001:db8::7",
            "browser": "Mozilla/5.0 (X11; Linux x86_64)",
            "os": "see https://x.example/?u=1",
        },
        {
            "type": "view",
            "event_id": EID[83],
            "timestamp": T0,
            "content_id": "v",
            "creator_id": "order-4155552671",
            "timezone": "Europe/Paris",
            "referrer_source": "https://www.google.com/search?q=ada%40example.com&x=" + "y" * 80,
        },
        {
            "type": "view",
            "event_id": EID[84],
            "timestamp": T0,
            "content_id": "v",
            "referrer_source": "http://192.168.1.20:8080/admin",
        },
        {
            "type": "api_call",
            "event_id": EID[85],
            "timestamp": T0,
            "method": "GET",
            "route": "https://api.example.com/users/ada@example.com/calls?from=203.0.113.7#x",
            "status_code": 404,
            "duration_ms": 3,
        },
        {
            "type": "error",
            "event_id": EID[86],
            "timestamp": T0,
            "error_type": "KeyError",
            "route": "/callers/+44 20 7946 0958?x=1",
        },
        {"type": "error", "event_id": EID[87], "timestamp": T0, "error_type": "ada@example.com"},
        {
            "type": "db_query",
            "event_id": EID[88],
            "timestamp": T0,
            "duration_ms": 1,
            "fingerprint": (
                "SELECT id FROM users WHERE email = 'ada@example.com' AND ip = '::ffff:10.0.0.1'"
            ),
        },
        {
            "type": "job",
            "event_id": EID[89],
            "timestamp": T0,
            "duration_ms": 1,
            "job_name": "notify 12:30:45 v1.2.3",
        },
        {
            "type": "purchase",
            "event_id": EID[90],
            "timestamp": T0,
            "amount_minor": 1,
            "currency": "EUR",
            "transaction_id": "user@tenant",
        },
    ],
    "batch_rejections": [
        {"type": "view", "event_id": EID[30], "timestamp": T0},
        {"type": "view", "event_id": EID[31], "timestamp": T0, "content_id": "v", "colour": "red"},
        {"type": "view", "event_id": EID[32], "timestamp": T0, "content_id": "-bad"},
        {"type": "view", "event_id": EID[33], "timestamp": T0, "content_id": "x" * 65},
        {
            "type": "purchase",
            "event_id": EID[34],
            "timestamp": T0,
            "amount_minor": -1,
            "currency": "XXY",
            "transaction_id": "t",
        },
        {
            "type": "purchase",
            "event_id": EID[35],
            "timestamp": T0,
            "amount_minor": 5.5,
            "currency": "eur",
            "transaction_id": 7,
        },
        {
            "type": "view",
            "event_id": EID[36],
            "timestamp": "2026-11-25T10:00:00",
            "content_id": "v",
        },
        {"type": "view", "event_id": EID[37], "timestamp": "yesterday", "content_id": "v"},
        {"type": "view", "event_id": EID[38], "timestamp": None, "content_id": "v"},
        {"type": "teleport", "event_id": EID[39]},
        "not an object",
        {"type": "view", "event_id": "XYZ", "timestamp": T0, "content_id": "v"},
        {
            "type": "view",
            "event_id": EID[40],
            "timestamp": T0,
            "content_id": "v",
            "content_type": "film",
            "authenticated": "maybe",
            "position": -1,
            "watch_time": "a lot",
            "country": "de",
            "city": "",
        },
        {
            "type": "view",
            "event_id": EID[41],
            "timestamp": T0,
            "content_id": "v",
            "new_visitor": 2,
            "unique_view": 0.5,
            "media_duration": None,
            "position": "inf",
        },
        {
            "type": "api_call",
            "event_id": EID[42],
            "timestamp": T0,
            "method": "get",
            "route": "",
            "status_code": 99,
            "duration_ms": "slow",
        },
        {
            "type": "job",
            "event_id": EID[43],
            "timestamp": T0,
            "job_name": "j",
            "duration_ms": 1,
            "outcome": "meh",
            "retries": 10001,
        },
        # A valid event among the bad ones is still written.
        {"type": "view", "event_id": EID[44], "timestamp": T0, "content_id": "survivor"},
    ],
    "batch_index": [
        # index1 over 96 bytes: 87-byte prefix cut at a character boundary + "~" + sha256[:8].
        {
            "type": "api_call",
            "event_id": EID[50],
            "timestamp": T0,
            "service": "svc",
            "method": "GET",
            "route": "/" + "a" * 120,
            "status_code": 200,
            "duration_ms": 1,
        },
        {
            "type": "api_call",
            "event_id": EID[51],
            "timestamp": T0,
            "service": "svc",
            "method": "GET",
            "route": "/" + "é" * 60,
            "status_code": 200,
            "duration_ms": 1,
        },
        {
            "type": "db_query",
            "event_id": EID[52],
            "timestamp": T0,
            "service": "ß" * 40,
            "fingerprint": "UPDATE t SET a = ?",
            "operation": "UPDATE",
            "duration_ms": 1,
        },
        {"type": "error", "event_id": EID[53], "timestamp": T0, "error_type": "ValueError"},
        {
            "type": "queue_delay",
            "event_id": EID[54],
            "timestamp": T0,
            "service": "w",
            "queue": "q",
            "delay_ms": 1,
        },
    ],
}


def _exporter_body() -> list[Any]:
    """Events as the exporter sends them: type, id, time and only the fields each was
    given, every other field left to the receiver's defaults (docs/ingest-protocol.md).
    Built by the exporter's own encoder from models, so the vector follows the encoder."""
    from datetime import UTC, datetime

    import orjson

    from edgemetrics.api_calls import ApiCallRecorder
    from edgemetrics.events import (
        Abandon,
        DbQuery,
        Error,
        Job,
        PipelineHealth,
        Purchase,
        QueueDelay,
        Refund,
        View,
        WatchTime,
    )  # fmt: skip
    from edgemetrics.layout import encode
    from edgemetrics.wire import encode_events

    t0 = datetime(2026, 11, 25, 10, tzinfo=UTC)  # T0
    when = {"timestamp": t0}
    recorder = ApiCallRecorder(service="api")
    api_call = recorder.build((recorder, "GET", "/v1/items/{id}", 200, 0.0, 0.004, 12, False, 1))
    assert api_call is not None
    events = [
        View(event_id=EID[60], content_id="v1", creator_id="c1", position=3.5, country="DE",
             **when),
        View(event_id=EID[61], content_id="v2", **when),
        WatchTime(event_id=EID[62], content_id="v2", watch_time=9.5, user_id="u1", **when),
        Abandon(event_id=EID[63], content_id="v2", position=0.0, **when),
        Purchase(event_id=EID[64], amount_minor=499, currency="EUR", transaction_id="tx-9", **when),
        Refund(event_id=EID[65], amount_minor=499, currency="EUR", transaction_id="tx-10", **when),
        api_call.model_copy(update={"event_id": EID[66], "timestamp": t0}),
        Job(event_id=EID[67], job_name="encode", duration_ms=12.5, **when),
        QueueDelay(event_id=EID[68], queue="media", delay_ms=5, **when),
        DbQuery(event_id=EID[69], fingerprint="SELECT 1", duration_ms=0.5, **when),
        Error(event_id=EID[70], error_type="ValueError", **when),
        PipelineHealth(event_id=EID[71], source="exporter", events_in=3, **when),
    ]  # fmt: skip
    # Key order on the wire follows a set's; here it is fixed so the file diffs cleanly.
    sent: list[Any] = [
        {k: item[k] for k in ("type", "event_id", "timestamp")} | dict(sorted(item.items()))
        for item in orjson.loads(encode_events(events))
    ]
    expected = [point_json(encode(event)) for event in events]
    got = [{k: v for k, v in p.items() if k != "index"} for p in run_batch_events(sent)["points"]]
    # What the receiver makes of the short form is what the whole event would give.
    assert got == expected, "an omitted field does not default to the model's value"
    return sent


def _req(
    now: int,
    events: Any,
    *,
    ua: str = CHROME,
    ip: str = "198.51.100.7",
    origin: str | None = ORIGIN,
    cf: dict[str, str] | None = None,
    url: str = ORIGIN + "/watch/video-1",
    referrer: str = "https://www.google.de/search?q=cats",
    headers: dict[str, str] | None = None,
    raw: str | None = None,
    consent: Any = None,
) -> dict[str, Any]:
    h = {"user-agent": ua, "content-type": "text/plain;charset=UTF-8"}
    if origin is not None:
        h["origin"] = origin
    h.update(headers or {})
    fields: dict[str, Any] = {"events": events, "url": url, "referrer": referrer}
    if consent is not None:
        fields["consent"] = consent
    body = raw if raw is not None else json.dumps(fields)
    # Both keys always: Miniflare fills missing request.cf keys with its own sample values.
    geo = {
        "country": "",
        "city": "",
        **(cf if cf is not None else {"country": "DE", "city": "Berlin"}),
    }
    return {"now": now, "ip": ip, "cf": geo, "headers": h, "body": body}


def _media(kind: str, content: str = "video-1", **extra: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "content_id": content,
        "content_type": "video",
        "creator_id": "creator-7",
        **extra,
    }


COLLECT_CASES: dict[str, dict[str, Any]] = {
    "collect_visitors": {
        "salts": {"2026-11-25": "11" * 32, "2026-11-26": "22" * 32},
        "requests": [
            # First contact: new visitor and session on the first event, a unique view.
            _req(
                NOW,
                [
                    _media("view", position=0, media_duration=300, age_ms=1200.7),
                    _media("play_start", position=0, media_duration=300, age_ms=1200),
                    _media("pause", position=42.5, media_duration=300, timezone="Europe/Berlin"),
                ],
            ),
            # Ten minutes later: same session; a second view of video-1 is not unique,
            # a first view of video-2 is.
            _req(
                NOW + 10 * MIN,
                [
                    _media("resume", position=42.5),
                    _media("view", position=0),
                    _media("view", "video-2"),
                    _media("watch_time", watch_time=61.25, position=103.75),
                ],
                referrer=ORIGIN + "/home",
            ),
            # Forty minutes of silence: a new session, same visitor.
            _req(NOW + 50 * MIN, [_media("abandon", position=120)], referrer=""),
            # Another device on the same IP is another visitor.
            _req(
                NOW + 51 * MIN,
                [_media("view")],
                ua=IPHONE,
                cf={"country": "US", "city": "Austin"},
                url=ORIGIN + "/watch/video-1?utm_source=newsletter&x=1",
            ),
            # Next day: a new salt, so the same browser counts as a new visitor again.
            _req(NOW + 24 * 60 * MIN, [_media("view")]),
            # Tablet and Linux classification; country XX (unknown) and T1 (Tor) are dropped.
            _req(
                NOW + 24 * 60 * MIN + MIN,
                [_media("view", "video-3")],
                ua=ANDROID_TABLET,
                cf={"country": "XX"},
                referrer="https://m.facebook.com/story.php?id=1",
            ),
            _req(
                NOW + 24 * 60 * MIN + 2 * MIN,
                [_media("view", "video-3")],
                ua=FIREFOX_LINUX,
                cf={"country": "T1", "city": "  "},
                referrer="https://news.example.org/a?b=c",
            ),
        ],
    },
    "collect_rejections": {
        "salts": {"2026-11-25": "33" * 32},
        "requests": [
            # A browser can never write a purchase, an api_call or an enrichment field.
            _req(
                NOW,
                [
                    {
                        "type": "purchase",
                        "amount_minor": 100,
                        "currency": "EUR",
                        "transaction_id": "t",
                    },
                    {
                        "type": "api_call",
                        "method": "GET",
                        "route": "/",
                        "status_code": 200,
                        "duration_ms": 1,
                    },
                    _media("view", country="FR", unique_view=True),
                    _media("view", age_ms=3600001),
                    _media("view", age_ms=-5),
                    _media("view", age_ms="soon"),
                    {"type": "view", "content_id": "-bad", "position": -1},
                    {"type": "view"},
                    "nope",
                    _media("view", "video-ok"),
                ],
            ),
            # Requests dropped or refused as a whole.
            _req(NOW, [_media("view")], headers={"dnt": "1"}),
            _req(NOW, [_media("view")], headers={"sec-gpc": "1"}),
            _req(NOW, [_media("view")], ua=GOOGLEBOT),
            _req(NOW, [_media("view")], ua=""),
            _req(NOW, [_media("view")], origin="https://evil.example.net"),
            _req(NOW, [_media("view")], origin=None),
            _req(NOW, None, raw="{not json"),
            _req(NOW, None, raw='{"events": 5}'),
            _req(NOW, [_media("view")] * 51),
            _req(NOW, None, raw=json.dumps({"events": [_media("view")], "pad": "x" * 17000})),
        ],
    },
    # Consent mode: the tracker's browser session id decides sessions (new_session and the
    # stored session id); visitors and unique views still come from the daily hash.
    "collect_consent": {
        "salts": {"2026-11-25": "55" * 32},
        "requests": [
            # First contact in consent mode: new visitor, new session.
            _req(
                NOW,
                [
                    _media("view", session_id=SID_A, age_ms=500),
                    _media("play_start", session_id=SID_A, age_ms=500),
                ],
                consent="given",
            ),
            # A second tab of the same browser (same IP and UA, so the same visitor hash)
            # five minutes later: its own session. Cookieless would call it the same one.
            _req(
                NOW + 5 * MIN,
                [_media("view", "video-2", session_id=SID_B)],
                consent="given",
            ),
            # The first tab after a network change (another IP, so another visitor hash):
            # still the first session, not a new one.
            _req(
                NOW + 10 * MIN,
                [_media("pause", position=60, session_id=SID_A)],
                ip="203.0.113.50",
                consent="given",
            ),
            # Forty minutes idle: the same browser session id starts a new session.
            _req(NOW + 50 * MIN, [_media("resume", session_id=SID_A)], consent="given"),
            # Consent given but an event without the id: that event is counted cookieless.
            _req(
                NOW + 51 * MIN,
                [
                    _media("abandon", position=90),
                    _media("watch_time", watch_time=3, session_id=SID_A),
                ],
                consent="given",
            ),
            # Without "consent": "given" a session id is refused per event, as before; the
            # other events of the request count.
            _req(
                NOW + 52 * MIN,
                [_media("view", "video-3", session_id=SID_A), _media("view", "video-3")],
            ),
            _req(NOW + 52 * MIN, [_media("view", "video-4", session_id=SID_A)], consent="yes"),
            _req(NOW + 52 * MIN, [_media("view", "video-4", session_id=SID_A)], consent=True),
            # Malformed ids, and a second id in one request (the first well-formed one,
            # even on an event refused for another field, is the request's session).
            _req(
                NOW + 53 * MIN,
                [
                    _media("view", session_id=SID_A.upper()),
                    _media("view", session_id=SID_A[:31]),
                    _media("view", session_id="ada@example.com"),
                    _media("view", session_id=12345),
                    _media("view", session_id=None),
                    _media("view", session_id=SID_B, country="FR"),
                    _media("view", session_id=SID_A),
                    _media("view", "video-5", session_id=SID_B),
                ],
                consent="given",
            ),
            # DNT and GPC win over consent: nothing read, nothing written.
            _req(
                NOW + 54 * MIN,
                [_media("view", session_id=SID_A)],
                headers={"dnt": "1"},
                consent="given",
            ),
            _req(
                NOW + 54 * MIN,
                [_media("view", session_id=SID_A)],
                headers={"sec-gpc": "1"},
                consent="given",
            ),
        ],
    },
    # Personal data from a page: in ids (refused), in the page URL and referrer (never
    # kept: the referrer becomes a source), in the headers (IP and UA only hashed).
    "collect_pii": {
        "salts": {"2026-11-25": "44" * 32},
        "requests": [
            _req(
                NOW,
                [
                    _media("view", "ada@example.com"),
                    _media("view", "video-1", creator_id="415-555-2671"),
                    _media("view", "video-2", timezone="+14155552671"),
                    _media("view", "video-3"),
                ],
                ip="203.0.113.7",
                url=ORIGIN + "/watch/video-1?email=ada@example.com&phone=+14155552671",
                referrer="https://mail.example.net/inbox?to=ada@example.com&ip=203.0.113.7",
            ),
        ],
    },
}


def main() -> None:
    BATCH_CASES["batch_exporter_defaults"] = _exporter_body()
    for name, events in BATCH_CASES.items():
        expect = run_batch_events(events)
        data = {
            "description": f"POST /v1/batch events: {name}",
            "kind": "batch",
            "events": events,
            "expect": expect,
        }
        (HERE / f"{name}.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    for name, case in COLLECT_CASES.items():
        results = run_collect_requests(case["salts"], case["requests"])
        reqs = [{**req, "expect": res} for req, res in zip(case["requests"], results, strict=True)]
        data = {
            "description": f"POST /v1/collect: {name}",
            "kind": "collect",
            "allowed_origins": [ORIGIN],
            "salts": case["salts"],
            "requests": reqs,
        }
        (HERE / f"{name}.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    print("vectors written")


if __name__ == "__main__":
    main()
