"""The browser path of the local collector: ``POST /v1/collect`` and ``GET /tracker.js``.

The same rules as the Worker's ``/v1/collect`` (``worker/src/collect.ts``; the exact rules
are in ``docs/ingest-protocol.md``): content events only, an origin allowlist, size limits,
bots dropped, DNT and GPC honoured, user agent and referrer reduced to labels, cookieless
visitor uniqueness decided before the write. The IP address and the User-Agent are used
only inside the visitor hash and are never stored.

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
    is_bot,
    referrer_source,
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


def _browser_errors(event: Any) -> list[dict[str, str]]:
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
        if key not in BROWSER_FIELDS
    ]
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
    """
    events: list[Any] = body["events"]
    page_url = _short_text(body.get("url"))
    source = referrer_source(_short_text(body.get("referrer")), page_url)
    agent = classify_user_agent(user_agent)
    country, city = _geo(country, city)
    site = (urlsplit(origin).hostname or "").lower()

    valid: list[tuple[int, Event]] = []
    rejected: list[dict[str, Any]] = []
    for index, raw in enumerate(events):
        event_id = raw.get("event_id") if isinstance(raw, dict) else None
        event_id = event_id if isinstance(event_id, str) else None
        errors = _browser_errors(raw)
        if errors:
            rejected.append({"index": index, "event_id": event_id, "errors": errors})
            continue
        data = dict(raw)
        age = data.pop("age_ms", 0)
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
            valid.append((index, parse_event(data)))
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
            for index, event in valid:
                stamp = round(event.timestamp.timestamp() * 1000)
                content_id = getattr(event, "content_id", "")
                state, unique = decide(state, visitor, event.type, content_id, stamp)
                enriched = event.model_copy(
                    update={
                        "session_id": unique.session_id,
                        "unique_view": unique.unique_view,
                        "new_visitor": unique.new_visitor,
                        "new_session": unique.new_session,
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
    rejected.sort(key=lambda r: int(r["index"]))
    return points, rejected


def routes(store: PointWriter, settings: CollectSettings) -> list[Route]:
    """The browser routes, ready to mount: ``POST /v1/collect`` and ``GET /tracker.js``.

    ``store`` is anything with ``write(points)``: the embedded store in the local collector.
    (Example in the module docstring.)
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
                'the body must be {"events": [...], "url"?: string, "referrer"?: string}',
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
