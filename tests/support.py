"""Test helpers shared by the test modules: real collector and producer processes, a
capturing client, and real servers on loopback ports. Fixtures live in conftest.py."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

import edgemetrics
from edgemetrics.events import ApiCall, Event
from edgemetrics.sinks import MemorySink
from edgemetrics.store import EmbeddedStore

SECRET = "test-secret-123"
PROCS = Path(__file__).parent / "procs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["EDGEMETRICS_SECRET"] = SECRET
    env["PYTHONPATH"] = str(PROCS) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Collector:
    """A collector process that can be stopped and started again on the same port/store."""

    def __init__(self, store_path: Path, port: int) -> None:
        self.store_path = store_path
        self.port = port
        self.url = f"http://127.0.0.1:{port}/v1/batch"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(PROCS / "collector_proc.py"),
                str(self.store_path),
                str(self.port),
            ],
            env=child_env(),
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=0.5)
                return
            except httpx.TransportError:
                if self.proc.poll() is not None:
                    raise RuntimeError("collector exited at start") from None
                time.sleep(0.05)
        raise RuntimeError("collector did not start")

    def stats(self) -> dict[str, int]:
        """The collector's counters once its journal has been moved into the store."""
        deadline = time.monotonic() + 30
        while True:
            stats: dict[str, int] = httpx.get(
                f"http://127.0.0.1:{self.port}/healthz", timeout=5
            ).json()
            if stats["pending"] == 0 or time.monotonic() > deadline:
                return stats
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def event_ids(self, table: str = "edgemetrics_content") -> list[str]:
        """Every stored event id (the collector must be stopped: DuckDB has one writer)."""
        store = EmbeddedStore(self.store_path, read_only=True)
        try:
            return [r["event_id"] for r in store.query(f"SELECT event_id FROM {table}")]
        finally:
            store.close()


def producer(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(PROCS / "producer_proc.py"), *args],
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )


def wait_until(predicate: object, timeout: float = 30.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False


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


def spooled_events(spool_dir: Path) -> list[dict[str, Any]]:
    """The events in a spool now, read straight from SQLite (oldest batch first): unlike
    ``Spool.claim`` this leases nothing, so an exporter thread at work cannot hide them."""
    from edgemetrics.spool import FILENAME
    from edgemetrics.wire import decode_body

    con = sqlite3.connect(spool_dir / FILENAME)
    try:
        events: list[dict[str, Any]] = []
        for (body,) in con.execute("SELECT body FROM batches ORDER BY id"):
            events.extend(decode_body(body, gzipped=True)[1])
        return events
    finally:
        con.close()
