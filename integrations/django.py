"""Django: a middleware class for ``settings.MIDDLEWARE``.

Put it first so it times everything below it::

    MIDDLEWARE = ["edgemetrics.integrations.django.EdgeMetricsMiddleware", ...]
    EDGEMETRICS = {"service": "web", "exclude_paths": ["/health"]}  # optional

The template is ``request.resolver_match.route`` (the URL pattern Django matched,
``include()`` prefixes joined), read after the view ran; unmatched paths share one
label. Django turns a view's exception into a 500 response below this middleware, so the
500 is what is recorded and Django's own error handling is unchanged. Streaming
responses are timed to their last chunk. Works in sync (WSGI) and async (ASGI) stacks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from time import perf_counter
from typing import Any

import edgemetrics
from edgemetrics.api_calls import UNMATCHED_ROUTE, ApiCallRecorder
from edgemetrics.optional_deps import require


def django_route(request: Any) -> str:
    """The matched URL pattern as ``/items/<int:pk>/``; one shared label when none matched.

    >>> class Match:
    ...     route = "items/<int:pk>/"
    >>> class Request:
    ...     resolver_match = Match()
    >>> django_route(Request())
    '/items/<int:pk>/'
    """
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None)
    if not isinstance(route, str) or match is None:
        return UNMATCHED_ROUTE
    return "/" + route.lstrip("^").removesuffix("$").lstrip("/")


def _already_authenticated(request: Any) -> bool:
    # request.user is lazy: reading it would query the session store on behalf of a
    # request that never needed it. Only a user the app already loaded is looked at.
    user = request.__dict__.get("user")
    if user is None:
        return False
    wrapped = getattr(user, "_wrapped", user)
    from django.utils.functional import empty  # type: ignore[import-untyped]

    if wrapped is empty:
        return False
    return bool(getattr(wrapped, "is_authenticated", False))


class EdgeMetricsMiddleware:
    """Records one api_call event per request; options from ``settings.EDGEMETRICS``."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        require("django", extra="django", integration="django")
        from django.conf import settings  # type: ignore[import-untyped]

        options = dict(getattr(settings, "EDGEMETRICS", {}) or {})
        self.get_response = get_response
        self.recorder = ApiCallRecorder(
            service=options.get("service", "app"),
            exclude_paths=options.get("exclude_paths", ()),
            exclude_methods=options.get("exclude_methods", ()),
            sample_rate=options.get("sample_rate", 1.0),
            cost_mode=options.get("cost_mode", False),
        )
        self._authenticated: Callable[[Any], bool] = (
            options.get("authenticated") or _already_authenticated
        )
        self._filtered = self.recorder.needs_filter
        self._weight = self.recorder.sample_interval
        self._async = asyncio.iscoroutinefunction(get_response)
        if self._async:
            from asgiref.sync import markcoroutinefunction

            markcoroutinefunction(self)

    def _skip(self, request: Any) -> bool:
        if edgemetrics._client is None:
            return True
        if not self._filtered:
            return False
        try:
            return self.recorder.excluded(request.method or "GET", request.path_info)
        except Exception:
            return True

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self.__acall__(request)
        if self._skip(request):
            return self.get_response(request)
        start = perf_counter()
        try:
            response = self.get_response(request)
        except BaseException:
            self._record(request, 500, start, 0)
            raise
        return self._finish(request, response, start)

    async def __acall__(self, request: Any) -> Any:
        if self._skip(request):
            return await self.get_response(request)
        start = perf_counter()
        try:
            response = await self.get_response(request)
        except BaseException:
            self._record(request, 500, start, 0)
            raise
        return self._finish(request, response, start)

    def _finish(self, request: Any, response: Any, start: float) -> Any:
        status = int(getattr(response, "status_code", 500))
        if not getattr(response, "streaming", False):
            self._record(request, status, start, len(response.content))
            return response
        if getattr(response, "is_async", False):
            response.streaming_content = self._timed_async(
                request, status, start, response.streaming_content
            )
        else:
            response.streaming_content = self._timed(
                request, status, start, response.streaming_content
            )
        return response

    def _timed(
        self, request: Any, status: int, start: float, body: Iterator[bytes]
    ) -> Iterator[bytes]:
        size = 0
        try:
            for chunk in body:
                size += len(chunk)
                yield chunk
        except BaseException:
            status = 500
            raise
        finally:
            self._record(request, status, start, size)

    async def _timed_async(
        self, request: Any, status: int, start: float, body: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        size = 0
        try:
            async for chunk in body:
                size += len(chunk)
                yield chunk
        except BaseException:
            status = 500
            raise
        finally:
            self._record(request, status, start, size)

    def _record(self, request: Any, status: int, start: float, size: int) -> None:
        client = edgemetrics._client
        if client is None:
            return
        try:
            route = django_route(request)
            authenticated = self._authenticated(request)
        except Exception:  # instrumentation must never break the response
            route, authenticated = UNMATCHED_ROUTE, False
        client.track_raw(
            (
                self.recorder,
                request.method or "GET",
                route,
                status,
                start,
                perf_counter(),
                size,
                authenticated,
                self._weight,
            )
        )
