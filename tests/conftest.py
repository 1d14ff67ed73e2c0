"""Shared fixtures: a capturing client and real servers on loopback ports."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import edgemetrics
from edgemetrics.events import ApiCall, Event
from edgemetrics.sinks import MemorySink

# Apps in tests/apps/ are imported by the servers the tests start, not by pytest.
collect_ignore = ["apps"]


class Captured:
    """What the exporter shipped during one test."""

    def __init__(self, sink: MemorySink) -> None:
        self.sink = sink

    def events(self) -> list[Event]:
        # A server may finish a request (close the body, run the recording code) just after
        # the client read the response: wait until the count stops changing.
        seen = -1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert edgemetrics.flush(10), "exporter did not drain"
            if len(self.sink.events) == seen:
                break
            seen = len(self.sink.events)
            time.sleep(0.1)
        return list(self.sink.events)

    def api_calls(self) -> list[ApiCall]:
        return [e for e in self.events() if isinstance(e, ApiCall)]

    def one_call(self, method: str, route: str) -> ApiCall:
        calls = [c for c in self.api_calls() if c.method == method and c.route == route]
        assert len(calls) == 1, (
            f"{method} {route}: {[(c.method, c.route) for c in self.api_calls()]}"
        )
        return calls[0]


@pytest.fixture
def captured() -> Iterator[Captured]:
    sink = MemorySink()
    edgemetrics.configure(sink=sink, flush_interval=0.05)
    yield Captured(sink)
    edgemetrics.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def serve_asgi(app: Any) -> tuple[str, Callable[[], None]]:
    """Run an ASGI app under a real uvicorn server in a thread; returns (base URL, stop)."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return f"http://127.0.0.1:{port}", stop


def serve_wsgi(app: Any) -> tuple[str, Callable[[], None]]:
    """Run a WSGI app under Werkzeug's threaded server in a thread; returns (base URL, stop)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join(10)

    return f"http://127.0.0.1:{server.server_port}", stop
