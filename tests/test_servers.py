"""Fork safety in real servers: gunicorn --preload with 2 workers, uvicorn with 2 workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from loopback import Receiver
from support import free_port, wait_for_port

from edgemetrics.events import ApiCall

TESTS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def run_server(command: list[str], receiver: Receiver) -> tuple[list[ApiCall], set[int], set[int]]:
    """Start the server, hit it until both workers answered, stop it; return what arrived."""
    port = free_port()
    env = {**os.environ, "EM_RECEIVER_PORT": str(receiver.port), "PYTHONPATH": str(TESTS)}
    proc = subprocess.Popen(
        [*command, "--bind" if "gunicorn" in command[0] else "--port", f"127.0.0.1:{port}"
         if "gunicorn" in command[0] else str(port)],
        cwd=TESTS, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    served: set[int] = set()
    sent = 0
    try:
        wait_for_port(port, timeout=30)
        deadline = time.monotonic() + 30
        while (len(served) < 2 or sent < 40) and time.monotonic() < deadline:
            # A new connection each time, so the kernel spreads them over the workers.
            response = httpx.get(
                f"http://127.0.0.1:{port}/who/{sent}", headers={"connection": "close"}
            )
            served.add(response.json()["pid"])
            sent += 1
        time.sleep(0.5)  # more than the exporters' flush interval
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    events, pids = receiver.snapshot()
    calls = [e for e in events if isinstance(e, ApiCall)]
    assert len(calls) == sent, f"sent {sent}, received {len(calls)}"
    return calls, served, pids


@pytest.fixture
def receiver() -> Receiver:
    r = Receiver()
    yield r  # type: ignore[misc]
    r.close()


def test_gunicorn_preload_two_workers(receiver: Receiver) -> None:
    calls, served, pids = run_server(
        [str(BIN / "gunicorn"), "--preload", "--workers", "2", "apps.forked:flask_app"], receiver
    )
    assert len(served) == 2 and served <= pids  # every worker's events arrived
    assert {c.route for c in calls} == {"/who/<int:n>"} and {c.service for c in calls} == {
        "gunicorn"
    }
    assert len({c.event_id for c in calls}) == len(calls)  # ids never repeat across workers


def test_uvicorn_two_workers(receiver: Receiver) -> None:
    calls, served, pids = run_server(
        [
            str(BIN / "uvicorn"),
            "--workers",
            "2",
            "--log-level",
            "warning",
            "apps.forked:fastapi_app",
        ],
        receiver,
    )
    assert len(served) == 2 and served <= pids
    assert {c.route for c in calls} == {"/who/{n}"} and {c.service for c in calls} == {"uvicorn"}
    assert len({c.event_id for c in calls}) == len(calls)
