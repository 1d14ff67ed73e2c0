"""Flask: ``init_app(app)`` wraps ``app.wsgi_app`` in the WSGI middleware.

The template is the ``url_rule`` Flask's router matched (blueprint prefixes included),
read when the response starts (or, if the view raised, from Flask's exception signal);
routes are never matched twice.

>>> from flask import Flask
>>> app = Flask("shop")
>>> _ = init_app(app, service="shop")
>>> type(app.wsgi_app).__name__
'EdgeMetricsWSGIMiddleware'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from edgemetrics.optional_deps import require


def init_app(
    app: Any,
    *,
    service: str = "app",
    exclude_paths: Iterable[str] = (),
    exclude_methods: Iterable[str] = (),
    sample_rate: float = 1.0,
    cost_mode: bool = False,
    authenticated: Callable[[dict[str, Any]], bool] | None = None,
) -> Any:
    """Instrument a Flask app; returns the app. Options as the WSGI middleware's."""
    flask = require("flask", extra="flask", integration="flask")
    if not isinstance(app, flask.Flask):
        raise TypeError(f"app: expected a Flask application, got {type(app).__name__}")
    from edgemetrics.wsgi import ROUTE_KEY, EdgeMetricsWSGIMiddleware

    def remember_route(sender: Any, exception: BaseException, **extra: Any) -> None:
        # Only when a view raised (Flask drops its request before the exception leaves
        # the app): note the rule the router matched for the middleware. Normal requests
        # pay nothing: the middleware reads the rule when the response starts.
        rule = flask.request.url_rule
        if rule is not None:
            flask.request.environ[ROUTE_KEY] = rule.rule

    flask.got_request_exception.connect(remember_route, app, weak=False)
    app.wsgi_app = EdgeMetricsWSGIMiddleware(
        app.wsgi_app,
        service=service,
        exclude_paths=exclude_paths,
        exclude_methods=exclude_methods,
        sample_rate=sample_rate,
        cost_mode=cost_mode,
        authenticated=authenticated,
    )
    return app


class EdgeMetrics:
    """The Flask extension pattern: ``EdgeMetrics(app)`` or ``EdgeMetrics().init_app(app)``."""

    def __init__(self, app: Any = None, **options: Any) -> None:
        self.options = options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any) -> Any:
        return init_app(app, **self.options)
