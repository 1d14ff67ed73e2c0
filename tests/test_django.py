"""A real Django app (settings, URLconf, views) behind a WSGI server on loopback."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import django
import httpx
import pytest
from django.conf import settings
from support import Captured, serve_wsgi

settings.configure(
    DEBUG=False,
    SECRET_KEY="test-only",
    ALLOWED_HOSTS=["127.0.0.1", "localhost", "testserver"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[
        "edgemetrics.integrations.django.EdgeMetricsMiddleware",
        "django.middleware.common.CommonMiddleware",
    ],
    INSTALLED_APPS=[],
    EDGEMETRICS={"service": "cms", "exclude_paths": ["/health/"]},
    LOGGING_CONFIG=None,
)
django.setup()
logging.getLogger("django.request").disabled = True  # the 500 below is on purpose

from django.http import (  # noqa: E402
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.urls import include, path  # noqa: E402
from django.views import View  # noqa: E402

from edgemetrics.api_calls import UNMATCHED_ROUTE  # noqa: E402


class Boom(RuntimeError):
    pass


def item(request: HttpRequest, pk: int) -> JsonResponse:
    return JsonResponse({"id": pk})


class Items(View):
    def post(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse({"created": True}, status=201)


def old(request: HttpRequest) -> HttpResponseRedirect:
    return HttpResponseRedirect("/api/items/1/")


def forbidden(request: HttpRequest) -> HttpResponse:
    return HttpResponse("no", status=403)


def boom(request: HttpRequest) -> HttpResponse:
    raise Boom("kaboom")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        for i in range(3):
            time.sleep(0.1)
            yield f"chunk{i}\n".encode()

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


api_patterns = [path("items/<int:pk>/", item), path("items/", Items.as_view())]
urlpatterns = [
    path("api/", include(api_patterns)),
    path("old/", old),
    path("forbidden/", forbidden),
    path("boom/", boom),
    path("stream/", stream),
    path("health/", health),
]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    from django.core.wsgi import get_wsgi_application

    url, stop = serve_wsgi(get_wsgi_application())
    yield url
    stop()


def test_templates_and_status_codes(server: str, captured: Captured) -> None:
    with httpx.Client(base_url=server) as http:
        assert http.get("/api/items/42/?email=a@b.c").json() == {"id": 42}
        assert http.post("/api/items/").status_code == 201
        assert http.get("/old/").status_code == 302
        assert http.get("/forbidden/").status_code == 403
        assert http.delete("/api/items/").status_code == 405
        for probe in ("/wp-login.php", "/.env", "/api/items/abc/"):
            assert http.get(probe).status_code == 404
        assert http.get("/boom/").status_code == 500
        assert http.get("/health/").status_code == 200  # excluded in settings.EDGEMETRICS

    ok = captured.one_call("GET", "/api/items/<int:pk>/")
    assert (ok.status_code, ok.service, ok.response_bytes) == (200, "cms", len(b'{"id": 42}'))
    assert captured.one_call("POST", "/api/items/").status_code == 201
    assert captured.one_call("DELETE", "/api/items/").status_code == 405
    assert captured.one_call("GET", "/old/").status_code == 302
    assert captured.one_call("GET", "/forbidden/").status_code == 403
    boom = captured.one_call("GET", "/boom/")
    assert (boom.status_code, boom.errors) == (500, 1)
    unmatched = [c.status_code for c in captured.api_calls() if c.route == UNMATCHED_ROUTE]
    assert unmatched == [404, 404, 404]
    assert "/health/" not in {c.route for c in captured.api_calls()}


def test_streaming_duration_runs_to_the_last_chunk(server: str, captured: Captured) -> None:
    body = httpx.get(server + "/stream/").text
    assert body == "chunk0\nchunk1\nchunk2\n"
    call = captured.one_call("GET", "/stream/")
    assert call.duration_ms >= 300 * 0.95 and call.response_bytes == len(body)


def test_async_stack_records_too(captured: Captured) -> None:
    import asyncio

    from django.test import AsyncClient

    response = asyncio.run(AsyncClient().get("/api/items/7/"))
    assert response.status_code == 200
    assert captured.one_call("GET", "/api/items/<int:pk>/").status_code == 200


def test_middleware_is_inert_and_harmless_before_configure(server: str) -> None:
    import edgemetrics

    edgemetrics.shutdown()
    assert httpx.get(server + "/api/items/3/").json() == {"id": 3}


def test_missing_framework_gives_a_clear_error(monkeypatch: Any) -> None:
    import sys

    from edgemetrics.integrations import flask as em_flask

    from edgemetrics.optional_deps import MissingDependency

    monkeypatch.setitem(sys.modules, "flask", None)  # as if Flask were not installed
    with pytest.raises(MissingDependency, match=r'pip install "edgemetrics\[flask\]"'):
        em_flask.init_app(object())
