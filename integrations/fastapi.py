"""FastAPI: one line adds the pure ASGI middleware (never ``BaseHTTPMiddleware``).

Templates come from the route FastAPI matched, prefixes of included routers and mounts
included: ``/v1/items/{item_id}``, never ``/v1/items/42``.

>>> from fastapi import FastAPI
>>> app = instrument(FastAPI(), service="api")
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
) -> App:
    """Add :class:`edgemetrics.asgi.EdgeMetricsMiddleware` to a FastAPI app; returns the app."""
    fastapi = require("fastapi", extra="fastapi", integration="fastapi")
    if not isinstance(app, fastapi.FastAPI):
        raise TypeError(f"app: expected a FastAPI application, got {type(app).__name__}")
    from .starlette import instrument as instrument_starlette

    instrument_starlette(
        app,
        service=service,
        exclude_paths=exclude_paths,
        exclude_methods=exclude_methods,
        sample_rate=sample_rate,
        cost_mode=cost_mode,
        authenticated=authenticated,
        integration="fastapi",
    )
    return app
