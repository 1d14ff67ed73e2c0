"""A real FastAPI app behind uvicorn on loopback, with and without the middleware."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from edgemetrics.integrations.fastapi import instrument
from fastapi import APIRouter, BackgroundTasks, FastAPI, Request, Response, WebSocket
from fastapi.responses import RedirectResponse, StreamingResponse
from support import Captured, serve_asgi

from edgemetrics.api_calls import UNMATCHED_ROUTE
from edgemetrics.asgi import EdgeMetricsMiddleware

BACKGROUND_DONE: list[str] = []


class Boom(RuntimeError):
    pass


def make_app() -> FastAPI:
    started: dict[str, bool] = {}

    async def lifespan(app: FastAPI) -> Any:
        started["yes"] = True
        app.state.started = started
        yield

    app = FastAPI(lifespan=lifespan)
    router = APIRouter(prefix="/v1")

    @router.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @router.post("/items", status_code=201)
    async def create_item() -> dict[str, str]:
        return {"created": "yes"}

    app.include_router(router)

    @app.get("/old")
    async def old() -> RedirectResponse:
        return RedirectResponse("/v1/items/1")

    @app.get("/boom")
    async def boom() -> None:
        raise Boom("kaboom")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> Any:
            for i in range(3):
                await asyncio.sleep(0.1)
                yield f"chunk{i}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/etag")
    async def etag(request: Request) -> Response:
        if request.headers.get("if-none-match") == '"v1"':
            return Response(status_code=304, headers={"etag": '"v1"'})
        return Response("content", headers={"etag": '"v1"'})

    @app.api_route("/head", methods=["GET", "HEAD"])
    async def head() -> Response:
        return Response("body-for-get", headers={"x-kind": "head-test"})

    @app.get("/background")
    async def background(tasks: BackgroundTasks) -> dict[str, str]:
        def later() -> None:
            time.sleep(1.0)
            BACKGROUND_DONE.append("done")

        tasks.add_task(later)
        return {"queued": "yes"}

    @app.get("/started")
    async def started_flag(request: Request) -> dict[str, bool]:
        return {"started": bool(request.app.state.started.get("yes"))}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        await websocket.send_text(text.upper())
        await websocket.close()

    sub = FastAPI()

    @sub.get("/users/{name}")
    async def user(name: str) -> dict[str, str]:
        return {"name": name}

    app.mount("/admin", sub)
    return app


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[str, str]]:
    bare_url, stop_bare = serve_asgi(make_app())
    ours_url, stop_ours = serve_asgi(instrument(make_app(), service="api"))
    yield bare_url, ours_url
    stop_ours()
    stop_bare()


def test_templates_and_status_codes(servers: tuple[str, str], captured: Captured) -> None:
    _, url = servers
    with httpx.Client(base_url=url) as http:
        assert http.get("/v1/items/42?email=a@b.c").json() == {"id": 42}
        assert http.post("/v1/items").status_code == 201
        assert http.get("/v1/items/not-a-number").status_code == 422
        assert http.get("/old").status_code == 307
        assert http.delete("/v1/items/42").status_code == 405
        for probe in ("/wp-login.php", "/.env", "/admin.php?id=1"):
            assert http.get(probe).status_code == 404
        assert http.get("/admin/users/ada").json() == {"name": "ada"}
    # uvicorn closes a connection whose app raised: a fresh connection for this one.
    assert httpx.get(url + "/boom").status_code == 500

    item = [
        c for c in captured.api_calls() if c.route == "/v1/items/{item_id}" and c.method == "GET"
    ]
    assert sorted(c.status_code for c in item) == [200, 422]
    ok = next(c for c in item if c.status_code == 200)
    assert ok.response_bytes == len(b'{"id":42}') and ok.service == "api" and ok.errors == 0
    assert captured.one_call("POST", "/v1/items").status_code == 201
    assert captured.one_call("GET", "/old").status_code == 307
    assert captured.one_call("DELETE", "/v1/items/{item_id}").status_code == 405
    boom = captured.one_call("GET", "/boom")
    assert boom.status_code == 500 and boom.errors == 1
    assert captured.one_call("GET", "/admin/users/{name}").status_code == 200
    unmatched = [c for c in captured.api_calls() if c.route == UNMATCHED_ROUTE]
    assert [c.status_code for c in unmatched] == [404, 404, 404]
    # Only templates are stored: no raw path, id or query string.
    assert {c.route for c in captured.api_calls()} == {
        "/v1/items/{item_id}",
        "/v1/items",
        "/old",
        UNMATCHED_ROUTE,
        "/boom",
        "/admin/users/{name}",
    }
    blobs = " ".join(
        " ".join(str(v) for v in c.model_dump().values() if isinstance(v, str))
        for c in captured.api_calls()
    )
    for raw in ("/42", "ada", "a@b.c", "wp-login", ".env"):
        assert raw not in blobs


def test_streaming_duration_runs_to_the_last_chunk(
    servers: tuple[str, str], captured: Captured
) -> None:
    _, url = servers
    body = httpx.get(url + "/stream").text
    assert body == "chunk0\nchunk1\nchunk2\n"
    call = captured.one_call("GET", "/stream")
    assert call.duration_ms >= 300 * 0.95  # three 100 ms pauses between chunks
    assert call.response_bytes == len(body)


def test_background_task_runs_and_is_not_counted_in_duration(
    servers: tuple[str, str], captured: Captured
) -> None:
    _, url = servers
    BACKGROUND_DONE.clear()
    assert httpx.get(url + "/background").json() == {"queued": "yes"}
    deadline = time.monotonic() + 10
    while not BACKGROUND_DONE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert BACKGROUND_DONE == ["done"]
    call = captured.one_call("GET", "/background")
    assert call.status_code == 200 and call.duration_ms < 1000


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("HEAD", "/head", {}),
        ("GET", "/head", {}),
        ("GET", "/etag", {"if-none-match": '"v1"'}),
        ("GET", "/etag", {}),
        ("GET", "/stream", {}),
        ("GET", "/admin/users/bob", {}),
        ("GET", "/missing", {}),
        ("GET", "/boom", {}),
        ("GET", "/started", {}),
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


def test_websocket_and_lifespan_pass_through(servers: tuple[str, str], captured: Captured) -> None:
    from websockets.sync.client import connect

    _, url = servers
    with connect(url.replace("http", "ws") + "/ws") as ws:
        ws.send("hello")
        assert ws.recv() == "HELLO"
    assert httpx.get(url + "/started").json() == {"started": True}
    assert [c.route for c in captured.api_calls()] == ["/started"]  # no event for the websocket


def test_exception_is_reraised_unchanged(captured: Captured) -> None:
    error = Boom("same object")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise error

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": []}
    with pytest.raises(Boom) as caught:
        asyncio.run(EdgeMetricsMiddleware(app)(scope, receive, send))
    assert caught.value is error
    assert [(c.route, c.status_code) for c in captured.api_calls()] == [(UNMATCHED_ROUTE, 500)]


def test_nothing_recorded_and_nothing_breaks_before_configure() -> None:
    import edgemetrics

    edgemetrics.shutdown()
    app = instrument(make_app())
    from starlette.testclient import TestClient

    with TestClient(app) as client:
        assert client.get("/v1/items/1").json() == {"id": 1}


def test_threads_share_one_client(servers: tuple[str, str], captured: Captured) -> None:
    _, url = servers

    def hit() -> None:
        with httpx.Client(base_url=url) as http:
            for i in range(25):
                http.get(f"/v1/items/{i}")

    threads = [threading.Thread(target=hit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = [c for c in captured.api_calls() if c.route == "/v1/items/{item_id}"]
    assert len(calls) == 100 and len({c.event_id for c in calls}) == 100
