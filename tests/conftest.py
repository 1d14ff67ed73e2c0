"""Shared fixtures: a real collector process on loopback and real producer processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

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
            [sys.executable, str(PROCS / "collector_proc.py"), str(self.store_path), str(self.port)],
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
        return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5).json()  # type: ignore[no-any-return]

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


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(tmp_path / "store.duckdb", free_port())
    yield c
    c.stop()


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
