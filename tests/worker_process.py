"""Runs the Worker in workerd (Miniflare) on loopback for Python tests, and signs batches."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

WORKER_DIR = Path(__file__).resolve().parents[1] / "worker"


def need_worker_build() -> None:
    """Fail with the setup steps when node, the npm packages or the build are missing."""
    if shutil.which("node") is None:
        raise RuntimeError("node is not installed (Node 20+ is needed for the Worker tests)")
    if not (WORKER_DIR / "node_modules" / "miniflare").is_dir():
        raise RuntimeError("worker/node_modules is missing: run `npm ci` in worker/")
    subprocess.run(["node", "build.mjs"], cwd=WORKER_DIR, check=True, capture_output=True)


@contextmanager
def running_worker(secret: str, origins: str = "https://app.example.com") -> Iterator[str]:
    """Start ``worker/test/serve.mjs``; yield the Worker's loopback URL; stop it after."""
    need_worker_build()
    proc = subprocess.Popen(
        ["node", "test/serve.mjs", "--secret", secret, "--origins", origins],
        cwd=WORKER_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the Worker did not start (exit code {proc.wait(10)})")
        yield str(json.loads(line)["url"])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def signed_batch_request(
    batch_id: str, events: list[dict[str, Any]], secret: str, *, compress: bool = True
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a ``POST /v1/batch`` exactly as docs/ingest-protocol.md says."""
    body = json.dumps({"batch_id": batch_id, "events": events}, separators=(",", ":")).encode()
    headers = {"content-type": "application/json"}
    if compress:
        body = gzip.compress(body)
        headers["content-encoding"] = "gzip"
    stamp = str(int(time.time()))
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    headers["x-edgemetrics-timestamp"] = stamp
    headers["x-edgemetrics-signature"] = "v1=" + mac
    return body, headers


def recorded_points(url: str, reset: bool = True) -> dict[str, Any]:
    """What the Worker's recording AE bindings received."""
    response = httpx.get(url + "__test/points" + ("?reset=1" if reset else ""), timeout=10)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data
