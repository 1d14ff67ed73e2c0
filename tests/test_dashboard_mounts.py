"""The dashboard mounted in each host framework, over real HTTP on loopback: Starlette and
FastAPI (``app.mount``), Flask and Django under WSGI (a2wsgi), Django under ASGI."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from edgemetrics.dashboard_kit import create_dashboard
from edgemetrics.dashboard_kit.wsgi import mount_wsgi
from loopback_server import serve_asgi, serve_wsgi
from starlette.requests import Request

from edgemetrics.events import View
from edgemetrics.layout import encode
from edgemetrics.principal import Principal
from edgemetrics.store import EmbeddedStore


def owner_by_cookie(request: Request) -> Principal | None:
    return Principal.owner() if request.cookies.get("who") == "owner" else None


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    store = EmbeddedStore(tmp_path_factory.mktemp("mounts") / "em.duckdb")
    store.write([encode(View(content_id=f"v{i % 3}", creator_id="c1")) for i in range(7)])
    app = create_dashboard(
        store, authenticate=owner_by_cookie, titles=lambda ids: {i: f"Title {i}" for i in ids}
    )
    yield app
    assert app.state.warmed.wait(60)  # no warm-up query left running on the store
    store.close()


def check_mounted(base: str, prefix: str, *, bare_prefix: bool = True) -> None:
    """What a person would see at ``prefix``: the shell, its assets, the card data."""
    with httpx.Client(base_url=base, cookies={"who": "owner"}) as http:
        if bare_prefix:  # the prefix without its slash leads to the overview
            first = http.get(prefix)
            assert first.status_code == 307 and first.headers["location"].endswith(prefix + "/")
        page = http.get(prefix + "/")
        assert page.status_code == 200
        assert f'<base href="{prefix}/">' in page.text
        # Every relative link resolves under the prefix.
        assert http.get(prefix + "/static/dashboard.js").status_code == 200
        assert http.get(prefix + "/static/dashboard.css").status_code == 200
        # The shell links assets by content hash, which browsers may keep for a year.
        asset = re.search(r'src="(static/dashboard\.js\?v=\w+)"', page.text)
        assert asset is not None
        cached = http.get(f"{prefix}/{asset.group(1)}")
        assert "immutable" in cached.headers["cache-control"]
        card = http.get(prefix + "/api/card/kpi_views").json()
        assert card["rows"][0]["value"] == 7
        top = http.get(prefix + "/api/card/top_views?period=today").json()
        assert [r["title"] for r in top["rows"]] == ["Title v0", "Title v1", "Title v2"]
        csv = http.get(prefix + "/export/top_views.csv?period=today")
        assert csv.headers["content-type"].startswith("text/csv")
        assert "Title v0,v0,3" in csv.text
        item = http.get(prefix + "/content/v1")
        assert item.status_code == 200 and "Title v1" in item.text
        assert http.get("/host").text == "host page"
    assert httpx.get(base + prefix + "/").status_code == 403  # no sign-in


def test_starlette_and_fastapi_mount(dashboard: Any) -> None:
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    app = FastAPI()

    @app.get("/host", response_class=PlainTextResponse)
    def host() -> str:
        return "host page"

    app.mount("/deep/stats", dashboard)
    with serve_asgi(app) as base:
        check_mounted(base, "/deep/stats")


def test_flask_mount_through_a2wsgi(dashboard: Any) -> None:
    flask = pytest.importorskip("flask")
    app = flask.Flask("host")

    @app.get("/host")
    def host() -> str:
        return "host page"

    app.wsgi_app = mount_wsgi(app.wsgi_app, "/analytics", dashboard)  # type: ignore[method-assign]
    with serve_wsgi(app) as base:
        check_mounted(base, "/analytics")


def _django(tmp: Path) -> None:
    django = pytest.importorskip("django")
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="test-only",
            ALLOWED_HOSTS=["127.0.0.1", "testserver"],
            ROOT_URLCONF="django_urls",
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
        )
        django.setup()


def test_django_mount_under_wsgi_and_asgi(dashboard: Any, tmp_path: Path) -> None:
    _django(tmp_path)
    from django.core.asgi import get_asgi_application
    from django.core.wsgi import get_wsgi_application
    from django.test.utils import override_settings
    from starlette.applications import Starlette
    from starlette.routing import Mount

    # Django's settings are process-wide and another test module may have configured them:
    # this host's own URLs and middleware apply for the length of this test.
    with override_settings(
        ROOT_URLCONF="django_urls",
        MIDDLEWARE=[],
        ALLOWED_HOSTS=["127.0.0.1", "testserver"],
    ):
        wsgi = mount_wsgi(get_wsgi_application(), "/analytics", dashboard)
        with serve_wsgi(wsgi) as base:
            check_mounted(base, "/analytics")
        # Under ASGI, a Starlette router in front of Django sends the prefix to the
        # dashboard (the bare prefix, without its slash, is Django's: the catch-all mount
        # takes it).
        asgi = Starlette(
            routes=[Mount("/analytics", app=dashboard), Mount("/", app=get_asgi_application())]
        )
        with serve_asgi(asgi) as base:
            check_mounted(base, "/analytics", bare_prefix=False)


def test_the_shell_has_no_external_asset(dashboard: Any) -> None:
    """Vendored assets only: no CDN, no hosted font, nothing off the mount."""
    with serve_asgi(dashboard) as base:
        page = httpx.get(base + "/", cookies={"who": "owner"}).text
        script = httpx.get(base + "/static/dashboard.js").text
        style = httpx.get(base + "/static/dashboard.css").text
    for text in (page, script, style):
        assert not re.search(r"(src|href)=\"(https?:)?//", text)
        assert "@import" not in text and "url(http" not in text
    assert len(script) + len(style) < 40_000  # small: no framework shipped
