"""The CLI modules: ``edgemetrics serve`` and ``edgemetrics spool status``."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from support import SECRET, child_env, free_port

from edgemetrics.signing import sign
from edgemetrics.spool import Spool
from edgemetrics.spool_command import add_command as add_spool
from edgemetrics.store import EmbeddedStore

RUN_CLI = (
    "import argparse, sys\n"
    "from edgemetrics.serve_command import add_command\n"
    "parser = argparse.ArgumentParser(prog='edgemetrics')\n"
    "add_command(parser.add_subparsers())\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "sys.exit(args.func(args))\n"
)


def test_serve_runs_the_collector_on_the_given_store_and_port(tmp_path: Path) -> None:
    port = free_port()
    store_path = tmp_path / "em.duckdb"
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_CLI, "serve", "--store", str(store_path), "--port", str(port)],
        env=child_env(),
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.05)
        body = json.dumps(
            {"batch_id": "e" * 32, "events": [{"type": "view", "content_id": "v9"}]}
        ).encode()
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/batch", content=body, headers=sign(body, SECRET)
        )
        assert answer.status_code == 200 and answer.json()["accepted"] == 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    store = EmbeddedStore(store_path, read_only=True)
    try:
        assert store.query("SELECT blob2 FROM edgemetrics_content") == [{"blob2": "v9"}]
    finally:
        store.close()


def test_serve_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    env = child_env()
    del env["EDGEMETRICS_SECRET"]
    result = subprocess.run(
        [sys.executable, "-c", RUN_CLI, "serve", "--store", str(tmp_path / "x.duckdb")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "set EDGEMETRICS_SECRET" in result.stderr


def test_spool_status_shows_depth_and_drops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = Spool(tmp_path, max_bytes=150)
    spool.put("a" * 32, b"x" * 100, events=250)
    spool.put("b" * 32, b"x" * 100, events=250)  # pushes the first out: 250 dropped
    spool.put("c" * 32, b"x" * 20, events=1, critical=True)
    spool.close()
    parser = argparse.ArgumentParser(prog="edgemetrics")
    add_spool(parser.add_subparsers())
    args = parser.parse_args(["spool", "status", "--dir", str(tmp_path), "--json"])
    assert args.func(args) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["batches"] == 2
    assert status["events"] == 251
    assert status["critical_events"] == 1
    assert status["dropped_spool_full"] == 250
