"""`edgemetrics demo`: the whole path, host app to dashboard, on the embedded default."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from support import free_port


@pytest.fixture
def demo(tmp_path: Path):  # type: ignore[no-untyped-def]
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgemetrics.cli",
            "demo",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path),
            "--sessions",
            "150",
            "--no-live",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield f"http://127.0.0.1:{port}", tmp_path, proc
    proc.terminate()
    proc.wait(10)


def test_demo_dashboard_shows_what_the_generator_sent_within_15_seconds(demo) -> None:  # type: ignore[no-untyped-def]
    base, data_dir, proc = demo
    deadline = time.monotonic() + 15
    cards, tally = None, None
    while time.monotonic() < deadline:
        time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            cards = httpx.get(f"{base}/analytics/api/overview").json()["cards"]
            tally = json.loads((data_dir / "generator.json").read_text())
        except (httpx.HTTPError, FileNotFoundError, json.JSONDecodeError):
            continue
        if (
            tally["sessions"] == 150
            and cards["views"] == tally["views"]
            and (cards["revenue_minor"] == tally["revenue_minor"])
        ):
            break
    assert cards is not None and tally is not None, "the demo never answered"
    assert tally["sessions"] == 150
    assert cards["views"] == tally["views"] > 0
    assert cards["purchases"] == tally["purchases"] > 0
    assert cards["revenue_minor"] == tally["revenue_minor"] and tally["revenue_minor"]
    assert cards["watch_time_seconds"] == pytest.approx(tally["watch_time_seconds"])
    assert cards["watch_time_seconds"] > 0

    page = httpx.get(f"{base}/analytics", follow_redirects=True)
    assert page.status_code == 200 and "Revenue per day" in page.text
    assert httpx.get(f"{base}/analytics/static/dashboard.js").status_code == 200


def test_the_playback_endpoint_keeps_good_events_when_one_is_bad(demo) -> None:  # type: ignore[no-untyped-def]
    base, _, _ = demo
    for _ in range(60):
        try:
            httpx.get(f"{base}/api/content")
            break
        except httpx.HTTPError:
            time.sleep(0.25)
    good = {"type": "view", "content_id": "v-sourdough", "creator_id": "c-ana"}
    answer = httpx.post(
        f"{base}/api/playback",
        json={"events": [good, {**good, "country": "Narnia"}, {**good, "type": "purchase"}, good]},
    ).json()
    assert answer["accepted"] == 2
    rejected = {r["index"]: r["errors"][0] for r in answer["rejected"]}
    assert rejected[1]["field"] == "country" and rejected[1]["rule"] == "string_pattern_mismatch"
    assert rejected[2]["field"] == "amount_minor" or rejected[2]["rule"] == "missing"
