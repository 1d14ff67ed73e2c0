"""The dashboard's Starlette app: a page shell that renders first, JSON the cards fill from."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from edgemetrics.dashboard_kit.overview import overview
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edgemetrics.principal import Principal
from edgemetrics.store import EmbeddedStore

Authenticate = Callable[[Request], Principal | None]
Titles = Callable[[Iterable[str]], Mapping[str, str]]

STATIC = Path(__file__).parent / "static"
PERIODS = {"today": 1, "7d": 7, "30d": 30, "90d": 90}


def _deny(request: Request) -> Principal | None:
    return None


def create_dashboard(
    store: EmbeddedStore,
    *,
    authenticate: Authenticate = _deny,
    titles: Titles | None = None,
    name: str = "Analytics",
) -> Starlette:
    """Build the dashboard app. ``authenticate(request)`` returns the viewer's
    :class:`~edgemetrics.principal.Principal`, or None to refuse; the default refuses all."""

    def principal_or_error(request: Request) -> Principal | Response:
        principal = authenticate(request)
        if principal is None:
            return _error_page(403, "Not allowed", "You are not allowed to see these analytics.")
        return principal

    async def index(request: Request) -> Response:
        if not request.url.path.endswith("/"):
            return RedirectResponse(request.url.path + "/", status_code=307)
        principal = principal_or_error(request)
        if isinstance(principal, Response):
            return principal
        scope = "all creators" if principal.is_owner else f"creator {principal.creator_id}"
        page = (STATIC / "index.html").read_text()
        page = page.replace("{{name}}", html.escape(name)).replace("{{scope}}", html.escape(scope))
        return HTMLResponse(page)

    async def overview_api(request: Request) -> Response:
        principal = principal_or_error(request)
        if isinstance(principal, Response):
            return JSONResponse({"error": "not allowed"}, status_code=403)
        period = request.query_params.get("period", "30d")
        if period not in PERIODS:
            return JSONResponse(
                {"error": f"period: must be one of {sorted(PERIODS)}"}, status_code=400
            )
        data = overview(store, days=PERIODS[period], creator_id=principal.creator_id)
        return JSONResponse(data)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/overview", overview_api),
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        ]
    )


def _error_page(status: int, title: str, message: str) -> HTMLResponse:
    body = (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></html>"
    )
    return HTMLResponse(body, status_code=status)
