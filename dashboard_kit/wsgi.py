"""Mount the dashboard in a WSGI host (Flask, Django under WSGI) through a2wsgi's bridge.

``mount_wsgi(host, "/analytics", dashboard)`` returns a WSGI app that sends every request
under the prefix to the dashboard (run by :class:`a2wsgi.ASGIMiddleware`, with the prefix
moved into ``SCRIPT_NAME`` so the dashboard's links carry it) and everything else to the
host. For Flask: ``app.wsgi_app = mount_wsgi(app.wsgi_app, "/analytics", dashboard)``;
for Django: ``application = mount_wsgi(get_wsgi_application(), "/analytics", dashboard)``.

>>> def host(environ, start_response):
...     start_response("200 OK", [("Content-Type", "text/plain")])
...     return [b"host"]
>>> import os, tempfile
>>> from edgemetrics.store import EmbeddedStore
>>> from edgemetrics.dashboard_kit import create_dashboard
>>> store = EmbeddedStore(os.path.join(tempfile.mkdtemp(), "em.duckdb"))
>>> app = mount_wsgi(host, "/analytics", create_dashboard(store))
>>> from wsgiref.util import setup_testing_defaults
>>> env = {"PATH_INFO": "/shop"}; setup_testing_defaults(env)
>>> app(env, lambda status, headers: None)
[b'host']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def as_wsgi(dashboard: Any) -> WSGIApp:
    """The dashboard (an ASGI app) as a WSGI app, through a2wsgi."""
    try:
        from a2wsgi import ASGIMiddleware
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "mounting the dashboard in a WSGI app needs a2wsgi: pip install 'edgemetrics[wsgi]'"
        ) from exc
    bridge = ASGIMiddleware(dashboard)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return bridge(environ, start_response)  # type: ignore[arg-type]

    return app


def mount_wsgi(host: WSGIApp, prefix: str, dashboard: Any) -> WSGIApp:
    """``host``, with ``dashboard`` answering every path under ``prefix``."""
    prefix = "/" + prefix.strip("/")
    bridged = as_wsgi(dashboard)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == prefix or path.startswith(prefix + "/"):
            environ = dict(environ)
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
            environ["PATH_INFO"] = path[len(prefix) :]
            return bridged(environ, start_response)
        return host(environ, start_response)

    return app
