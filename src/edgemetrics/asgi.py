"""Pure ASGI middleware: one api_call event per HTTP request.

The route template is read after the app ran (``scope["route"]``, set by Starlette's
router), never the raw path, so ids and query strings never reach storage. Unmatched
paths share one label. Duration runs to the end of the response body.

>>> from starlette.applications import Starlette
>>> app = EdgeMetricsMiddleware(Starlette())
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from edgemetrics import track
from edgemetrics.events import ApiCall

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]

UNMATCHED_ROUTE = "(unmatched)"


def route_template(scope: Scope) -> str:
    """The matched route's template, prefixed by the mount path; one label when none matched."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED_ROUTE
    return str(scope.get("root_path", "")) + path


class EdgeMetricsMiddleware:
    """Wrap an ASGI app; HTTP requests become api_call events, everything else passes through."""

    def __init__(self, app: ASGIApp, *, service: str = "app") -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        size = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException:
            status = 500
            raise
        finally:
            self._record(scope, status, size, (time.perf_counter() - start) * 1000.0)

    def _record(self, scope: Scope, status: int, size: int, duration_ms: float) -> None:
        # Instrumentation must never break the request.
        with contextlib.suppress(Exception):
            track(
                ApiCall(
                    service=self.service,
                    method=scope["method"],
                    route=route_template(scope),
                    status_code=status,
                    duration_ms=duration_ms,
                    response_bytes=size,
                    errors=1 if status >= 500 else 0,
                )
            )
