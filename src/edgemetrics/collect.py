"""The browser path of the local collector: ``POST /v1/collect`` and ``GET /tracker.js``.

The same rules as the Worker's ``/v1/collect`` (``worker/src/collect.ts``; the exact rules
are in ``docs/ingest-protocol.md``): content events only, an origin allowlist, size limits,
bots dropped, DNT and GPC honoured, user agent and referrer reduced to labels, cookieless
visitor uniqueness decided before the write. The IP address and the User-Agent are used
only inside the visitor hash and are never stored. In consent mode (``"consent": "given"``
in the body) each event may carry the tracker's browser session id, which then decides
sessions instead of the visitor hash; it is hashed, never stored as sent.

Mount the routes into the local collector (or any Starlette app):

>>> from starlette.applications import Starlette
>>> class ListStore:
...     def __init__(self): self.points = []
...     def write(self, points): self.points.extend(points); return len(points)
>>> app = Starlette(routes=routes(ListStore(), CollectSettings(allowed_origins=("https://a.example",))))
>>> sorted(r.path for r in app.routes)
['/tracker.js', '/v1/collect']
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgemetrics.enrich import (
    LABEL_MAX,
    MemoryVisitorStore,
    classify_user_agent,
    decide,
    decide_session,
    is_bot,
    is_browser_session,
    referrer_source,
    session_key,
    visitor_hash,
)
from edgemetrics.events import Event, InvalidEvent, parse_event
from edgemetrics.layout import DataPoint, LayoutLimitError, encode

COLLECT_MAX_BODY = 16 * 1024
COLLECT_MAX_EVENTS = 50
MAX_URL = 2048
MAX_AGE_MS = 3600 * 1000
BROWSER_TYPES = ("view", "play_start", "pause", "resume", "complete", "abandon", "watch_time")
# What a browser may say; everything else about the event is decided by the collector.
BROWSER_FIELDS = frozenset(
    {
        "type",
        "event_id",
        "content_id",
        "content_type",
        "creator_id",
        "position",
        "media_duration",
        "watch_time",
        "timezone",
        "age_ms",
    }
)


class PointWriter(Protocol):
    """Where accepted data points go: the embedded store, or anything with ``write``."""

    def write(self, points: Iterable[DataPoint]) -> int: ...


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class CollectSettings:
    """Configuration of the browser endpoint.

    ``allowed_origins``: exact origins, ``https://*.example.com`` for subdomains, or ``*``.
    ``trust_proxy_headers``: read the client IP from ``CF-Connecting-IP`` (else the first
    ``X-Forwarded-For`` hop) and geography from ``CF-IPCountry``/``CF-IPCity``, as set by
    Cloudflare or a proxy you control; off, the IP is the socket peer and there is no geography.

    >>> CollectSettings(allowed_origins=("https://*.example.com",)).origin_allowed(
    ...     "https://www.example.com")
    True
    """

    allowed_origins: Sequence[str] = ()
    trust_proxy_headers: bool = False
    visitors: MemoryVisitorStore = field(default_factory=MemoryVisitorStore)
    clock: Callable[[], int] = _now_ms

    def origin_allowed(self, origin: str | None) -> bool:
        if not origin:
            return False
        for entry in self.allowed_origins:
            if entry in ("*", origin):
                return True
            scheme, sep, rest = entry.partition("://*.")
            if sep and origin.startswith(scheme + "://") and origin.endswith("." + rest):
                return True
        return False


def _cors(origin: str) -> dict[str, str]:
    return {
        "access-control-allow-origin": origin,
        "access-control-allow-methods": "POST, OPTIONS",
        "access-control-allow-headers": "content-type",
        "access-control-max-age": "86400",
        "vary": "Origin",
    }


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


class _RequestSession:
    """The one browser session id a consent-mode request may carry (the first well-formed)."""

    def __init__(self, consent: bool) -> None:
        self.consent = consent
        self.id: str | None = None

    def check(self, value: Any) -> list[dict[str, str]]:
        if not self.consent:
            return [
                {
                    "field": "session_id",
                    "rule": "browser_field",
                    "message": 'set by the collector unless the request says "consent": "given"',
                }
            ]
        if not is_browser_session(value):
            return [
                {
                    "field": "session_id",
                    "rule": "browser_session",
                    "message": "must be 32 lowercase hex digits (the tracker's random session id)",
                }
            ]
        if self.id is None:
            self.id = value
        elif value != self.id:
            return [
                {
                    "field": "session_id",
                    "rule": "browser_session",
                    "message": "one browser session id per request",
                }
            ]
        return []


def _browser_errors(event: Any, session: _RequestSession) -> list[dict[str, str]]:
    if not isinstance(event, dict):
        return [{"field": "event", "rule": "type", "message": "must be a JSON object"}]
    if event.get("type") not in BROWSER_TYPES:
        return [
            {
                "field": "type",
                "rule": "browser_type",
                "message": "a browser may send only content events ("
                + ", ".join(BROWSER_TYPES)
                + ")",
            }
        ]
    errors = [
        {
            "field": key,
            "rule": "browser_field",
            "message": "set by the collector, not by the browser",
        }
        for key in event
        if key not in BROWSER_FIELDS and key != "session_id"
    ]
    if "session_id" in event:
        errors.extend(session.check(event["session_id"]))
    if "age_ms" in event:
        age = event["age_ms"]
        if isinstance(age, bool) or not isinstance(age, int | float) or age != age:
            errors.append(
                {
                    "field": "age_ms",
                    "rule": "float_type",
                    "message": "Input should be a valid number",
                }
            )
        elif age < 0:
            errors.append(
                {
                    "field": "age_ms",
                    "rule": "greater_than_equal",
                    "message": "Input should be greater than or equal to 0",
                }
            )
        elif age > MAX_AGE_MS:
            errors.append(
                {
                    "field": "age_ms",
                    "rule": "less_than_equal",
                    "message": f"Input should be less than or equal to {MAX_AGE_MS}",
                }
            )
    return errors


def _short_text(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) <= MAX_URL else None


def _client(request: Request, settings: CollectSettings) -> tuple[str, str | None, str | None]:
    """The client IP (for the hash only) and the country and city, per the settings."""
    headers = request.headers
    if settings.trust_proxy_headers:
        ip = headers.get("cf-connecting-ip") or headers.get("x-forwarded-for", "").split(",")[0]
        return ip.strip(), headers.get("cf-ipcountry"), headers.get("cf-ipcity")
    return (request.client.host if request.client else ""), None, None


def _geo(country: str | None, city: str | None) -> tuple[str | None, str | None]:
    # XX is "unknown" and T1 is Tor in Cloudflare's geography: neither is a country.
    good_country = (
        country
        if country and re.fullmatch(r"[A-Z]{2}", country) and country not in ("XX", "T1")
        else None
    )
    city = city.strip() if city else ""
    return good_country, (city[:LABEL_MAX] or None)


def collect_events(
    body: Any,
    *,
    origin: str,
    user_agent: str,
    ip: str,
    country: str | None,
    city: str | None,
    now_ms: int,
    visitors: MemoryVisitorStore,
) -> tuple[list[DataPoint], list[dict[str, Any]]]:
    """Turn a parsed /v1/collect body into data points and per-event rejections.

    The caller has checked the origin, DNT/GPC, bots and sizes. Rejections are
    ``{"index", "event_id", "errors": [{"field", "rule", "message"}]}`` as the Worker gives.

    >>> points, rejected = collect_events(
    ...     {"events": [{"type": "view", "content_id": "v1"}, {"type": "purchase"}]},
    ...     origin="https://a.example", user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    ...     ip="192.0.2.1", country="DE", city=None, now_ms=1_795_600_000_000,
    ...     visitors=MemoryVisitorStore())
    >>> [(p.blobs[0], p.blobs[6], p.doubles[6]) for p in points]
    [('view', 'DE', 1.0)]
    >>> rejected[0]["errors"][0]["rule"]
    'browser_type'
    """
    events: list[Any] = body["events"]
    page_url = _short_text(body.get("url"))
    source = referrer_source(_short_text(body.get("referrer")), page_url)
    agent = classify_user_agent(user_agent)
    country, city = _geo(country, city)
    site = (urlsplit(origin).hostname or "").lower()
    # Only the exact string turns consent mode on; anything else is cookieless.
    session = _RequestSession(body.get("consent") == "given")

    # (index, event, whether it carried the browser session id)
    valid: list[tuple[int, Event, bool]] = []
    rejected: list[dict[str, Any]] = []
    for index, raw in enumerate(events):
        event_id = raw.get("event_id") if isinstance(raw, dict) else None
        event_id = event_id if isinstance(event_id, str) else None
        errors = _browser_errors(raw, session)
        if errors:
            rejected.append({"index": index, "event_id": event_id, "errors": errors})
            continue
        data = dict(raw)
        age = data.pop("age_ms", 0)
        # The browser's id never reaches the event: the session id is decided below.
        carried = data.pop("session_id", None) is not None
        # Milliseconds (a number over 2e10 reads as ms), so no float rounding creeps in.
        data.update(
            timestamp=now_ms - int(age // 1),
            country=country,
            city=city,
            device_class=agent.device_class,
            browser=agent.browser,
            browser_version=agent.browser_version,
            os=agent.os,
            os_version=agent.os_version,
            referrer_source=source,
        )
        try:
            valid.append((index, parse_event(data), carried))
        except InvalidEvent as exc:
            rejected.append(
                {
                    "index": index,
                    "event_id": event_id,
                    "errors": [{"field": f, "rule": r, "message": m} for f, r, m in exc.errors],
                }
            )

    points: list[DataPoint] = []
    if valid:
        with visitors.lock:
            visitor = visitor_hash(visitors.salt(now_ms), site, ip, user_agent)
            state = visitors.get(visitor, now_ms)
            consented = session.id is not None and any(c for _, _, c in valid)
            key = session_key(site, session.id) if consented and session.id else None
            browser = visitors.get_session(key, now_ms) if key is not None else None
            for index, event, carried in valid:
                stamp = round(event.timestamp.timestamp() * 1000)
                content_id = getattr(event, "content_id", "")
                state, unique = decide(state, visitor, event.type, content_id, stamp)
                sid, new_session = unique.session_id, unique.new_session
                if carried and key is not None:
                    # Consent mode: the browser's session decides sessions, not the hash.
                    browser, sid, new_session = decide_session(browser, key, stamp)
                enriched = event.model_copy(
                    update={
                        "session_id": sid,
                        "unique_view": unique.unique_view,
                        "new_visitor": unique.new_visitor,
                        "new_session": new_session,
                    }
                )
                try:
                    points.append(encode(enriched))
                except LayoutLimitError as exc:
                    rejected.append(
                        {
                            "index": index,
                            "event_id": event.event_id,
                            "errors": [
                                {"field": "event", "rule": "blob_bytes", "message": str(exc)}
                            ],
                        }
                    )
            if state is not None:  # always set: ``valid`` is not empty
                visitors.put(visitor, state, now_ms)
            if key is not None and browser is not None:
                visitors.put_session(key, browser, now_ms)
    rejected.sort(key=lambda r: int(r["index"]))
    return points, rejected


def routes(store: PointWriter, settings: CollectSettings) -> list[Route]:
    """The browser routes, ready to mount: ``POST /v1/collect`` and ``GET /tracker.js``.

    ``store`` is anything with ``write(points)``: the embedded store in the local collector.

    >>> from starlette.applications import Starlette
    >>> from starlette.testclient import TestClient
    >>> class Points(list):
    ...     def write(self, points): self.extend(points); return len(points)
    >>> store = Points()
    >>> settings = CollectSettings(allowed_origins=("https://a.example",))
    >>> client = TestClient(Starlette(routes=routes(store, settings)))
    >>> client.post(
    ...     "/v1/collect",
    ...     content='{"events": [{"type": "view", "content_id": "v"}]}',
    ...     headers={"origin": "https://a.example", "user-agent": "Mozilla/5.0 Firefox/128.0"},
    ... ).json()
    {'accepted': 1, 'rejected': []}
    >>> store[0].blobs[:2]
    ('view', 'v')
    """

    async def collect(request: Request) -> Response:
        origin = request.headers.get("origin")
        if not settings.origin_allowed(origin):
            return _error(403, "origin_not_allowed", f"origin {origin or '(none)'} is not allowed")
        assert origin is not None
        cors = _cors(origin)
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=cors)
        if request.headers.get("dnt") == "1" or request.headers.get("sec-gpc") == "1":
            return Response(status_code=204, headers=cors)
        user_agent = request.headers.get("user-agent", "")
        if is_bot(user_agent):
            return Response(status_code=204, headers=cors)
        try:
            declared = int(request.headers.get("content-length", "0"))
        except ValueError:
            declared = 0
        if declared > COLLECT_MAX_BODY:
            return _error(413, "too_large", f"body is over the {COLLECT_MAX_BODY}-byte limit", cors)
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > COLLECT_MAX_BODY:
                return _error(
                    413, "too_large", f"body is over the {COLLECT_MAX_BODY}-byte limit", cors
                )
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return _error(400, "malformed_json", f"the body is not valid JSON: {exc}", cors)
        if not isinstance(body, dict) or not isinstance(body.get("events"), list):
            return _error(
                400,
                "bad_shape",
                'the body must be {"events": [...], "url"?: string, "referrer"?: string, '
                '"consent"?: "given"}',
                cors,
            )
        if len(body["events"]) > COLLECT_MAX_EVENTS:
            return _error(
                413,
                "too_many_events",
                f"{len(body['events'])} events; the limit is {COLLECT_MAX_EVENTS}",
                cors,
            )
        ip, country, city = _client(request, settings)
        points, rejected = collect_events(
            body,
            origin=origin,
            user_agent=user_agent,
            ip=ip,
            country=country,
            city=city,
            now_ms=settings.clock(),
            visitors=settings.visitors,
        )
        if points:
            store.write(points)
        return JSONResponse({"accepted": len(points), "rejected": rejected}, headers=cors)

    async def tracker(request: Request) -> Response:
        return Response(
            tracker_source(),
            media_type="application/javascript; charset=utf-8",
            headers={
                "cache-control": "public, max-age=3600",
                "access-control-allow-origin": "*",
                "x-content-type-options": "nosniff",
            },
        )

    return [
        Route("/v1/collect", collect, methods=["POST", "OPTIONS"]),
        Route("/tracker.js", tracker, methods=["GET", "HEAD"]),
    ]


def tracker_source() -> str:
    """The built browser tracker shipped in the package (``worker/dist/tracker.js``).

    >>> "sendBeacon" in tracker_source()
    True
    """
    return resources.files("edgemetrics").joinpath("static/tracker.js").read_text("utf-8")
