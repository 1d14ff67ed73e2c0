"""WSGI middleware: one api_call event per request, for Flask and other WSGI apps.

The status comes from ``start_response``; the duration runs until the server closes the
response iterable (so a streamed body is timed to its end); the body size is counted as
the server iterates. The route template is read after the app ran by ``route(environ)``:
by default the ``url_rule`` Flask's router matched (see :func:`werkzeug_route`).
Nothing is matched twice, and the raw path is never stored. When the app raises, the
request is recorded as a 500 and the same exception propagates.

>>> import edgemetrics
>>> from edgemetrics.sinks import MemorySink
>>> def app(environ, start_response):
...     start_response("204 No Content", [])
...     return [b""]
>>> wrapped = EdgeMetricsWSGIMiddleware(app, route=lambda environ: "/ping")
>>> sink = MemorySink()
>>> _ = edgemetrics.configure(sink=sink)
>>> from wsgiref.util import setup_testing_defaults
>>> environ = {}
>>> setup_testing_defaults(environ)
>>> body = wrapped(environ, lambda status, headers, exc_info=None: None)
>>> b"".join(body), body.close()
(b'', None)
>>> edgemetrics.flush() and (sink.events[0].route, sink.events[0].status_code)
('/ping', 204)
>>> edgemetrics.shutdown()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from operator import attrgetter
from time import perf_counter
from types import TracebackType
from typing import TYPE_CHECKING, Any

import edgemetrics
from edgemetrics.api_calls import UNMATCHED_ROUTE, ApiCallRecorder

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

__all__ = ["ROUTE_KEY", "EdgeMetricsWSGIMiddleware", "werkzeug_route"]


ROUTE_KEY = "edgemetrics.route"
_new = object.__new__


def werkzeug_route(environ: Environ) -> str:
    """The template of the rule Werkzeug/Flask matched, with the mount's ``SCRIPT_NAME``.

    The middleware calls it when the app calls ``start_response``, while Werkzeug's
    request (and the ``url_rule`` its router matched) is in ``environ["werkzeug.request"]``.
    When the app raises instead, the Flask integration has put the rule under
    ``environ["edgemetrics.route"]`` from Flask's ``got_request_exception`` signal.

    >>> werkzeug_route({"PATH_INFO": "/u/7", "edgemetrics.route": "/u/<int:id>"})
    '/u/<int:id>'
    >>> werkzeug_route({"PATH_INFO": "/u/7"})
    '(unmatched)'
    """
    template = environ.get(ROUTE_KEY)
    if template is None:
        rule = getattr(environ.get("werkzeug.request"), "url_rule", None)
        template = getattr(rule, "rule", None)
    if type(template) is not str:
        return UNMATCHED_ROUTE
    script = environ.get("SCRIPT_NAME")
    return str(script).rstrip("/") + template if script else template


class _Recorded:
    """One request: its ``start_response`` (a bound method the app calls), then the
    response iterable, counted and timed; records the request when the server closes it.

    One object per request carries what a closure, a state list and a wrapper did: it is
    made without ``__init__`` (the middleware sets its slots), so a request pays one
    allocation and no Python call to set it up.
    """

    __slots__ = (
        "_body",
        "_iter",
        "_length",
        "_line",
        "_middleware",
        "_route",
        "_server_start_response",
        "_size",
        "_start",
        "environ",
    )

    _body: Iterable[bytes]
    _iter: Callable[[], Iterator[bytes]]
    _length: int | None
    _line: str | None  # None: no response started, or the body failed (a 500)
    _middleware: EdgeMetricsWSGIMiddleware
    _route: str | None
    _server_start_response: StartResponse
    _size: int
    _start: float
    environ: Environ

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        """The ``start_response`` the app is given: notes the status line, the route and
        a declared length, then calls the server's."""
        # The app has routed and answers now, while its request object is still alive
        # (Flask drops it from the environ before returning): read the route.
        self._line = status
        try:
            environ = self.environ
            route_of = self._middleware._route
            if route_of is werkzeug_route:
                # werkzeug_route, inlined for Flask (the default): one call fewer.
                template = environ.get(ROUTE_KEY)
                if template is None:
                    # Plain attribute reads (the interpreter caches them per type),
                    # not getattr(): a Werkzeug request always has url_rule.
                    request = environ.get("werkzeug.request")
                    if request is not None:
                        try:
                            rule = request.url_rule
                            if rule is not None:
                                template = rule.rule
                        except AttributeError:  # a Werkzeug request outside Flask
                            pass
                if type(template) is not str:
                    template = UNMATCHED_ROUTE
                else:
                    script = environ.get("SCRIPT_NAME")
                    if script:
                        template = str(script).rstrip("/") + template
                self._route = template
            else:
                self._route = route_of(environ)
            # Werkzeug writes Content-Length last: looked at first, then the others.
            name, value = headers[-1] if headers else ("", None)
            if name != "Content-Length":
                value = None
                for header, text in headers:
                    if len(header) == 14 and header.lower() == "content-length":
                        value = text
                        break
            if value is not None:
                self._length = _LENGTHS.get(value) or _length(value)
        except Exception:
            self._route = self._route or UNMATCHED_ROUTE
        return self._server_start_response(status, headers, exc_info)

    if TYPE_CHECKING:

        def __iter__(self) -> Iterator[bytes]: ...

    else:
        # ``iter(request)`` calls ``request._iter()``: the body's own ``__iter__`` when
        # the app declared its length (the server iterates the body itself: nothing per
        # chunk), else ``_counted``. Set by the middleware once the app returned; a
        # property over attrgetter is C-level, where a ``def __iter__`` costs one more
        # Python call per request, entered from the interpreter's C slot.
        __iter__ = property(attrgetter("_iter"))

    def _counted(self) -> Iterator[bytes]:
        try:
            for chunk in self._body:
                self._size += len(chunk)
                yield chunk
        except BaseException:
            self._line = None  # recorded as a 500
            raise

    def close(self) -> None:
        try:
            # A method call the interpreter caches for the body's type (no bound method
            # made, as getattr() would); a body without close is rare.
            try:
                self._body.close()  # type: ignore[attr-defined]
            except AttributeError:
                if hasattr(self._body, "close"):
                    raise  # the body's own close failed: the server must see it
        finally:
            end = perf_counter()
            line = self._line
            status = 500 if line is None else _STATUS_CODES.get(line) or _status_code(line)
            middleware = self._middleware
            route = self._route
            client = edgemetrics._client
            if client is not None and route is not None and middleware._authenticated is None:
                # EdgeMetricsWSGIMiddleware._record, inlined for the usual request (route
                # read at start_response, no authenticated hook): this runs once per request.
                record = (
                    middleware.recorder,
                    self.environ.get("REQUEST_METHOD", "GET"),
                    route,
                    status,
                    self._start,
                    end,
                    self._size,
                    False,
                    middleware._weight,
                )
                buffer = client._buffer
                depth = len(buffer)
                if depth < client.max_buffer:
                    buffer.append(record)
                    if depth + 1 == client._raw_wake:
                        client._exporter.wake()
                else:
                    client.counters.add(dropped_buffer_full=1)
            else:
                middleware._record(self.environ, status, self._start, self._size, route, end)


# Status code per status line ("200 OK", ...): lines repeat, parsing each costs more than
# the lookup. Bounded: an app may write any reason phrase.
_STATUS_CODES: dict[str, int] = {}
# Declared lengths by their header text, for the same reason (bounded likewise).
_LENGTHS: dict[str, int] = {}


def _length(text: str) -> int:
    length = int(text)
    if length < 0:
        raise ValueError("a negative Content-Length")
    if len(_LENGTHS) < 4096:
        _LENGTHS[text] = length
    return length


def _status_code(line: str) -> int:
    try:
        code = int(line[:3])
    except ValueError:
        return 500
    if len(_STATUS_CODES) < 1024:
        _STATUS_CODES[line] = code
    return code


class EdgeMetricsWSGIMiddleware:
    """Wrap a WSGI app; each request becomes one api_call event.

    Options as :class:`edgemetrics.asgi.EdgeMetricsMiddleware`, plus ``route(environ)``,
    which reads the matched template after the app ran (default: Flask/Werkzeug's
    ``url_rule``), and ``authenticated(environ) -> bool``; both are called once the
    response is done.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        service: str = "app",
        exclude_paths: Iterable[str] = (),
        exclude_methods: Iterable[str] = (),
        sample_rate: float = 1.0,
        cost_mode: bool = False,
        route: Callable[[Environ], str] = werkzeug_route,
        authenticated: Callable[[Environ], bool] | None = None,
    ) -> None:
        self.app = app
        self.recorder = ApiCallRecorder(
            service=service,
            exclude_paths=exclude_paths,
            exclude_methods=exclude_methods,
            sample_rate=sample_rate,
            cost_mode=cost_mode,
        )
        self._route = route
        self._authenticated = authenticated
        self._filtered = self.recorder.needs_filter
        self._weight = self.recorder.sample_interval

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if edgemetrics._client is None:
            return self.app(environ, start_response)
        if self._filtered:
            try:
                skip = self.recorder.excluded(
                    environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
                )
            except Exception:
                skip = True
            if skip:
                return self.app(environ, start_response)
        request = _new(_Recorded)
        request._middleware = self
        request.environ = environ
        request._server_start_response = start_response
        request._line = request._route = request._length = None
        request._start = start = perf_counter()
        try:
            request._body = body = self.app(environ, request.start_response)
        except BaseException:
            self._record(environ, 500, start, 0, None)
            raise
        length = request._length
        if length is None:
            request._size = 0
            request._iter = request._counted
        else:
            # What the server sends: nothing for HEAD (the method as the app left it).
            request._size = 0 if environ.get("REQUEST_METHOD") == "HEAD" else length
            try:
                request._iter = body.__iter__
            except AttributeError:  # an iterable of the old protocol (__getitem__)
                request._iter = partial(iter, body)
        return request

    def _record(
        self,
        environ: Environ,
        status: int,
        start: float,
        size: int,
        route: str | None,
        end: float | None = None,
    ) -> None:
        if end is None:
            end = perf_counter()
        client = edgemetrics._client
        if client is None:
            return
        # A route not read at start_response (the app raised) is read now; the buffer
        # keeps strings, never the environ and the framework objects in it.
        if route is None:
            try:
                route = self._route(environ)
            except Exception:
                route = UNMATCHED_ROUTE
        authenticated = False
        if self._authenticated is not None:
            try:
                authenticated = bool(self._authenticated(environ))
            except Exception:
                authenticated = False
        record = (
            self.recorder,
            environ.get("REQUEST_METHOD", "GET"),
            route,
            status,
            start,
            end,
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
