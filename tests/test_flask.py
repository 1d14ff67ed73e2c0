"""A real Flask app behind Werkzeug's server on loopback, with and without the middleware."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from edgemetrics.integrations.flask import EdgeMetrics, init_app
from flask import Blueprint, Flask, Response, redirect, request, stream_with_context
from support import Captured, serve_wsgi

from edgemetrics.api_calls import UNMATCHED_ROUTE
from edgemetrics.wsgi import EdgeMetricsWSGIMiddleware


class Boom(RuntimeError):
    pass


def make_app() -> Flask:
    app = Flask("shop")
    api = Blueprint("api", "shop", url_prefix="/v1")

    @api.get("/items/<int:item_id>")
    def get_item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @api.post("/items")
    def create_item() -> tuple[dict[str, str], int]:
        return {"created": "yes"}, 201

    app.register_blueprint(api)

    @app.get("/old")
    def old() -> Any:
        return redirect("/v1/items/1", code=302)

    @app.get("/forbidden")
    def forbidden() -> tuple[str, int]:
        return "no", 403

    @app.get("/boom")
    def boom() -> None:
        raise Boom("kaboom")

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[str]:
            for i in range(3):
                time.sleep(0.1)
                yield f"chunk{i}\n"

        return Response(stream_with_context(chunks()), mimetype="text/plain")

    @app.get("/etag")
    def etag() -> Response:
        response = Response("content")
        response.set_etag("v1")
        return response.make_conditional(request)

    return app


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[str, str]]:
    bare_url, stop_bare = serve_wsgi(make_app())
    ours_url, stop_ours = serve_wsgi(init_app(make_app(), service="shop"))
    yield bare_url, ours_url
    stop_ours()
    stop_bare()


def test_templates_and_status_codes(servers: tuple[str, str], captured: Captured) -> None:
    _, url = servers
    with httpx.Client(base_url=url) as http:
        assert http.get("/v1/items/42?email=a@b.c").json() == {"id": 42}
        assert http.post("/v1/items").status_code == 201
        assert http.get("/old").status_code == 302
        assert http.get("/forbidden").status_code == 403
        assert http.delete("/v1/items/42").status_code == 405
        for probe in ("/wp-login.php", "/.env", "/v1/items/not-a-number"):
            assert http.get(probe).status_code == 404
        assert http.get("/boom").status_code == 500

    ok = captured.one_call("GET", "/v1/items/<int:item_id>")
    assert (ok.status_code, ok.service, ok.errors) == (200, "shop", 0)
    assert ok.response_bytes == len(httpx.get(url + "/v1/items/42").content)
    assert captured.one_call("POST", "/v1/items").status_code == 201
    assert captured.one_call("GET", "/old").status_code == 302
    assert captured.one_call("GET", "/forbidden").status_code == 403
    assert captured.one_call("GET", "/boom").status_code == 500
    # Werkzeug's router raises 405 without naming a rule, and routes are never matched a
    # second time: a wrong method shares the unmatched label, with its own status.
    unmatched = [
        (c.method, c.status_code) for c in captured.api_calls() if c.route == UNMATCHED_ROUTE
    ]
    assert unmatched == [("DELETE", 405), ("GET", 404), ("GET", 404), ("GET", 404)]


def test_streaming_duration_runs_to_the_last_chunk(
    servers: tuple[str, str], captured: Captured
) -> None:
    _, url = servers
    body = httpx.get(url + "/stream").text
    assert body == "chunk0\nchunk1\nchunk2\n"
    call = captured.one_call("GET", "/stream")
    assert call.duration_ms >= 300 * 0.95 and call.response_bytes == len(body)


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("HEAD", "/v1/items/1", {}),
        ("GET", "/etag", {"if-none-match": '"v1"'}),
        ("GET", "/etag", {}),
        ("GET", "/stream", {}),
        ("GET", "/missing", {}),
        ("GET", "/boom", {}),
        ("GET", "/old", {}),
    ],
)
def test_responses_are_identical_with_and_without_middleware(
    servers: tuple[str, str], captured: Captured, method: str, path: str, headers: dict[str, str]
) -> None:
    bare_url, ours_url = servers
    bare = httpx.request(method, bare_url + path, headers=headers)
    ours = httpx.request(method, ours_url + path, headers=headers)
    assert (ours.status_code, ours.content) == (bare.status_code, bare.content)
    ignore = {"date"}
    assert {k: v for k, v in ours.headers.items() if k not in ignore} == {
        k: v for k, v in bare.headers.items() if k not in ignore
    }
    if method == "HEAD":
        assert captured.one_call("HEAD", "/v1/items/<int:item_id>").status_code == 200


def test_exception_propagates_unchanged_and_is_recorded(captured: Captured) -> None:
    app = make_app()
    app.config["PROPAGATE_EXCEPTIONS"] = True
    EdgeMetrics(app)
    with pytest.raises(Boom):
        app.test_client().get("/boom")
    assert [(c.route, c.status_code) for c in captured.api_calls()] == [("/boom", 500)]


def test_error_while_streaming_is_a_500(captured: Captured) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("content-type", "text/plain")])
        yield b"partial"
        raise Boom("mid-stream")

    wrapped = EdgeMetricsWSGIMiddleware(app, route=lambda environ: "/export")
    body = wrapped({"REQUEST_METHOD": "GET", "PATH_INFO": "/export"}, lambda *a: None)
    with pytest.raises(Boom):
        list(body)
    body.close()  # type: ignore[attr-defined]
    assert [(c.route, c.status_code) for c in captured.api_calls()] == [("/export", 500)]
