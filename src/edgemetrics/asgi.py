"""Pure ASGI middleware: one api_call event per HTTP request, nothing else touched.

Websockets and lifespan pass straight through. For HTTP the middleware wraps ``send`` to
see the status, the body size and the end of the body (streaming included), then appends
one tuple to the client's buffer. The route template is read after the app ran, from what
the router left in the scope (``scope["route"]``, FastAPI's effective route context for
included routers, ``root_path`` for mounts): routes are never matched a second time, and
the raw path (ids, query strings) never reaches storage. Unmatched paths share one label.

When the app raises, the request is recorded as a 500 and the same exception propagates.
Until :func:`edgemetrics.configure` is called the middleware only passes requests through.

>>> import edgemetrics
>>> from edgemetrics.sinks import MemorySink
>>> from starlette.applications import Starlette
>>> from starlette.responses import PlainTextResponse
>>> from starlette.routing import Route
>>> from starlette.testclient import TestClient
>>> async def item(request):
...     return PlainTextResponse("ok")
>>> app = EdgeMetricsMiddleware(Starlette(routes=[Route("/items/{id:int}", item)]))
>>> sink = MemorySink()
>>> _ = edgemetrics.configure(sink=sink)
>>> TestClient(app).get("/items/42?ref=mail").status_code
200
>>> edgemetrics.flush() and (sink.events[0].route, sink.events[0].status_code)
('/items/{id}', 200)
>>> edgemetrics.shutdown()
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from time import perf_counter
from typing import Any

import edgemetrics
from edgemetrics.api_calls import UNMATCHED_ROUTE, ApiCallRecorder

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["UNMATCHED_ROUTE", "EdgeMetricsMiddleware", "route_template"]


def route_template(scope: Scope) -> str:
    """The matched route's template with its mount prefix; one shared label when none matched.

    >>> from starlette.routing import Route
    >>> route_template({"route": Route("/u/{name}", lambda r: None), "root_path": ""})
    '/u/{name}'
    >>> route_template({"path": "/wp-login.php"})
    '(unmatched)'
    """
    route = scope.get("route")
    if route is None:
        return UNMATCHED_ROUTE
    path = None
    fastapi_scope = scope.get("fastapi")
    if isinstance(fastapi_scope, dict):
        # FastAPI routers included with a prefix keep the original route in scope["route"]
        # and the prefixed path in their effective route context.
        context = fastapi_scope.get("effective_route_context")
        if context is not None and getattr(context, "original_route", None) is route:
            path = getattr(context, "path_format", None) or getattr(context, "path", None)
    if not path:
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED_ROUTE
    prefix = _mount_prefix(scope)
    if path.endswith("/{path}") and hasattr(route, "routes"):
        # A Mount whose app is not a router (static files, a raw ASGI app): the mount
        # path is already in root_path; keep one label for everything under it.
        return (prefix or path.removesuffix("/{path}")) + "/{path}"
    return prefix + path


def _mount_prefix(scope: Scope) -> str:
    # Starlette's Mount appends the matched prefix to root_path and remembers the server's
    # own root_path in app_root_path; only the part the app's mounts added is the prefix.
    app_root = scope.get("app_root_path")
    if app_root is None:
        return ""
    root = str(scope.get("root_path", ""))
    return root[len(app_root) :] if root.startswith(app_root) else root


# What the middleware keeps of a scope: (route, fastapi, root_path, app_root_path, user).
ScopeParts = tuple[Any, Any, Any, Any, Any]

# Template per route object, keyed by identity (routes are long-lived and often
# unhashable), for each (FastAPI context, root paths) it was seen with: usually one. The
# objects are kept in the value and compared, so a recycled id never returns another
# route's template.
_templates: dict[int, list[tuple[Any, Any, Any, Any, str]]] = {}
_MAX_TEMPLATES = 4096


# The templates of routes seen with no FastAPI scope (the usual request), by route
# identity, for the request path: (route, root_path, app_root_path, template). Filled on
# the exporter thread by _template_of_parts; the request path reads it with one lookup,
# and a record whose route is found there carries its template instead of scope parts.
_plain: dict[int, tuple[Any, Any, Any, str]] = {}


def _template_of_parts(parts: ScopeParts) -> str:
    route, fastapi_scope, root_path, app_root_path, _ = parts
    if route is None:
        return UNMATCHED_ROUTE
    if fastapi_scope is None:
        known = _plain.get(id(route))
        if (
            known is not None
            and known[0] is route
            and known[1] == root_path
            and known[2] == app_root_path
        ):
            return known[3]
        template = route_template(
            {"route": route, "root_path": root_path, "app_root_path": app_root_path}
            if app_root_path is not None
            else {"route": route, "root_path": root_path}
            if root_path is not None
            else {"route": route}
        )
        if len(_plain) >= _MAX_TEMPLATES:
            _plain.clear()
        _plain[id(route)] = (route, root_path, app_root_path, template)
        return template
    context = fastapi_scope.get("effective_route_context")
    seen = _templates.get(id(route))
    if seen is not None:
        for known, known_context, known_root, known_app_root, template in seen:
            if (
                known is route
                and known_context is context
                and known_root == root_path
                and known_app_root == app_root_path
            ):
                return template
    scope: dict[str, Any] = {"route": route, "fastapi": fastapi_scope}
    if root_path is not None:
        scope["root_path"] = root_path
    if app_root_path is not None:
        scope["app_root_path"] = app_root_path
    template = route_template(scope)
    if len(_templates) >= _MAX_TEMPLATES:
        _templates.clear()
    entry = (route, context, root_path, app_root_path, template)
    if seen is None or seen[0][0] is not route or len(seen) >= 16:
        _templates[id(route)] = [entry]  # a new route (or a recycled id): start over
    else:
        seen.append(entry)  # the same route under another mount
    return template


def _parts_authenticated(parts: ScopeParts) -> bool:
    # Starlette's AuthenticationMiddleware (and compatible ones) leave scope["user"].
    user = parts[4]
    return bool(getattr(user, "is_authenticated", False)) if user is not None else False


class EdgeMetricsMiddleware:
    """Wrap an ASGI app; HTTP requests become api_call events, everything else passes through.

    Options: ``service`` (the label of this app), ``exclude_paths`` (glob patterns on the
    raw path, e.g. ``"/health"``, ``"/static/*"``), ``exclude_methods``, ``sample_rate``
    (head sampling; the weight is stored), ``cost_mode`` (per-minute aggregates) and
    ``authenticated(scope) -> bool`` (called once the response is sent; by default
    ``scope["user"].is_authenticated``, read on the exporter thread).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str = "app",
        exclude_paths: Iterable[str] = (),
        exclude_methods: Iterable[str] = (),
        sample_rate: float = 1.0,
        cost_mode: bool = False,
        authenticated: Callable[[Scope], bool] | None = None,
    ) -> None:
        self.app = app
        self.recorder = ApiCallRecorder(
            service=service,
            exclude_paths=exclude_paths,
            exclude_methods=exclude_methods,
            sample_rate=sample_rate,
            cost_mode=cost_mode,
            resolve_route=_template_of_parts,
            resolve_authenticated=_parts_authenticated,
        )
        self._authenticated = authenticated
        self._filtered = self.recorder.needs_filter
        self._weight = self.recorder.sample_interval

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = edgemetrics._client
        if client is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        recorder = self.recorder
        if self._filtered:
            try:
                skip = recorder.excluded(scope["method"], scope["path"])
            except Exception:
                skip = True
            if skip:
                await self.app(scope, receive, send)
                return
        status = 500
        size = 0
        end = 0.0

        # A plain function handing back send's awaitable: one coroutine frame fewer per
        # message than an ``async def`` wrapper.
        def send_wrapper(message: Message) -> Awaitable[None]:
            nonlocal status, size, end
            kind = message["type"]
            if kind == "http.response.body":
                body = message.get("body")
                if body:
                    size += len(body)
                if not message.get("more_body"):
                    end = perf_counter()
            elif kind == "http.response.start":
                status = message["status"]
            return send(message)

        start = perf_counter()
        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException:
            # A response already started keeps its status line on the wire, but the
            # request failed: count it as a server error.
            status = 500
            end = 0.0
            raise
        finally:
            # Keep only what the route and the user need: holding whole scopes (and what
            # they reference) in the buffer would cost the garbage collector dearly.
            get = scope.get
            user = get("user")
            route = get("route")
            # No user in the scope (no authentication middleware): anonymous, known now;
            # else the exporter thread reads ``user.is_authenticated``.
            authenticated = False if user is None else None
            if self._authenticated is not None:
                try:
                    authenticated = bool(self._authenticated(scope))
                except Exception:
                    authenticated = False
            # A route already seen (with the same mount, no FastAPI scope): its template,
            # known now; else the parts of the scope the exporter thread resolves it from.
            known = _plain.get(id(route))
            if route is None and authenticated is not None:
                info: Any = UNMATCHED_ROUTE  # no route matched: nothing to resolve
            elif (
                known is not None
                and known[0] is route
                and authenticated is not None
                and known[1] == get("root_path")
                and known[2] == get("app_root_path")
                and get("fastapi") is None
            ):
                info = known[3]
            else:
                info = (route, get("fastapi"), get("root_path"), get("app_root_path"), user)
            record = (
                recorder,
                scope["method"],
                info,
                status,
                start,
                end or perf_counter(),
                size,
                authenticated,
                self._weight,
            )
            # Client.track_raw, inlined: this runs once per request served.
            buffer = client._buffer
            depth = len(buffer)
            if depth < client.max_buffer:
                buffer.append(record)
                if depth + 1 == client._raw_wake:
                    client._exporter.wake()
            else:
                client.counters.add(dropped_buffer_full=1)
