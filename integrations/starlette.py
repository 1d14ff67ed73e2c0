"""Starlette: one line adds the pure ASGI middleware.

>>> from starlette.applications import Starlette
>>> app = instrument(Starlette(), service="web")
>>> app.user_middleware[0].cls.__name__
'EdgeMetricsMiddleware'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from edgemetrics.optional_deps import require

App = TypeVar("App")


def instrument(
    app: App,
    *,
    service: str = "app",
    exclude_paths: Iterable[str] = (),
    exclude_methods: Iterable[str] = (),
    sample_rate: float = 1.0,
    cost_mode: bool = False,
    authenticated: Callable[[Any], bool] | None = None,
    integration: str = "starlette",
) -> App:
    """Add :class:`edgemetrics.asgi.EdgeMetricsMiddleware` to a Starlette app; returns the app.

    Call it before the app starts serving (Starlette builds its middleware stack then).
    Options as the middleware's.
    """
    starlette_apps = require("starlette.applications", extra=integration, integration=integration)
    if not isinstance(app, starlette_apps.Starlette):
        raise TypeError(
            f"app: expected a Starlette or FastAPI application, got {type(app).__name__}"
        )
    from edgemetrics.asgi import EdgeMetricsMiddleware

    app.add_middleware(
        EdgeMetricsMiddleware,
        service=service,
        exclude_paths=exclude_paths,
        exclude_methods=exclude_methods,
        sample_rate=sample_rate,
        cost_mode=cost_mode,
        authenticated=authenticated,
    )
    return app
