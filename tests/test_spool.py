"""The SQLite spool: acknowledged delete, leases, bounds, full disk, corrupt files."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import spooled_events

from edgemetrics.client import Client
from edgemetrics.events import Purchase, View
from edgemetrics.exporter import RetryPolicy
from edgemetrics.http_sink import HttpSink
from edgemetrics.spool import FILENAME, Spool, SpoolError
from edgemetrics.spool_command import status_command


def bid(n: int) -> str:
    return f"{n:032x}"


def test_a_batch_leaves_only_when_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for n in range(3):
        spool.put(bid(n), b"x" * 10, events=2)
    first = spool.claim(2)
    assert [b.batch_id for b in first] == [bid(0), bid(1)]  # oldest first
    spool.release([bid(1)])  # sending failed
    spool.ack([bid(0)])  # accepted
    assert [b.batch_id for b in spool.claim(5)] == [bid(1), bid(2)]
    assert spool.stats().events == 4
    spool.close()


def test_a_put_of_the_same_batch_id_is_stored_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(bid(1), b"abc", events=1)
    spool.put(bid(1), b"abc", events=1)
    assert spool.stats().batches == 1
    assert spool.stats().bytes == 3
    spool.close()


def test_batches_leased_by_a_killed_process_are_requeued_on_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, lease_s=3600)
    spool.put(bid(1), b"body", events=5)
    spool.close()
    # Another process leases the batch and dies before acknowledging it.
    code = (
        "import os, sys; from edgemetrics.spool import Spool; "
        f"s = Spool({str(tmp_path)!r}, lease_s=3600); assert len(s.claim(1)) == 1; os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    restarted = Spool(tmp_path, lease_s=3600)
    again = restarted.claim(1)
    assert [b.batch_id for b in again] == [bid(1)]
    assert again[0].attempts == 2
    restarted.close()


def test_over_the_byte_bound_the_oldest_non_critical_are_dropped_and_counted(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path, max_bytes=1000)
    spool.put(bid(0), b"p" * 300, events=1, critical=True)
    for n in range(1, 4):
        spool.put(bid(n), b"v" * 200, events=10)
    assert spool.put(bid(4), b"v" * 300, events=10)  # needs room: bid(1) goes
    stats = spool.stats()
    assert stats.dropped_spool_full == 10
    kept = [b.batch_id for b in spool.claim(10)]
    assert kept == [bid(0), bid(2), bid(3), bid(4)]
    assert stats.bytes <= 1000
    spool.close()


def test_a_critical_batch_is_kept_even_past_the_byte_bound(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100)
    assert spool.put(bid(0), b"p" * 80, events=1, critical=True)
    assert spool.put(bid(1), b"p" * 80, events=1, critical=True, durable=True)
    assert not spool.put(bid(2), b"v" * 50, events=7)  # no room, nothing droppable
    stats = spool.stats()
    assert stats.critical_events == 2
    assert stats.dropped_spool_full == 7
    spool.close()


def test_non_critical_batches_past_the_age_bound_are_dropped_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_age=0.2)
    spool.put(bid(0), b"old", events=4)
    spool.put(bid(1), b"money", events=1, critical=True)
    time.sleep(1.1)  # expiry runs at most once a second
    spool.put(bid(2), b"new", events=2)
    stats = spool.stats()
    assert stats.dropped_expired == 4
    assert [b.batch_id for b in spool.claim(5)] == [bid(1), bid(2)]
    spool.close()


def test_a_corrupt_spool_is_quarantined_reported_and_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / FILENAME).write_bytes(b"this is not a SQLite database" * 100)
    with caplog.at_level(logging.ERROR, logger="edgemetrics"):
        spool = Spool(tmp_path)
    assert "unreadable" in caplog.text and "fresh spool" in caplog.text
    assert spool.put(bid(1), b"fresh", events=1)
    stats = spool.stats()
    assert stats.batches == 1
    assert len(stats.quarantined) == 1
    assert Path(stats.quarantined[0]).read_bytes().startswith(b"this is not a SQLite")
    spool.close()

    import argparse

    code = status_command(argparse.Namespace(dir=str(tmp_path), json=False))
    out = capsys.readouterr().out
    assert code == 1
    assert "quarantined (corrupt, set aside)" in out
    assert "1 batches, 1 events" in out


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[tuple[Path, int | None]]:
    """A 1 MiB tmpfs when we may mount (root), else a SQLite page limit on a plain dir."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    mounted = False
    if os.geteuid() == 0 and not os.environ.get("EDGEMETRICS_TEST_NO_MOUNT"):
        mounted = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                capture_output=True,
            ).returncode
            == 0
        )
    yield mount, None if mounted else 256
    if mounted:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_gives_a_clear_error_and_counters_and_the_host_keeps_going(
    small_disk: tuple[Path, int | None], caplog: pytest.LogCaptureFixture
) -> None:
    directory, page_limit = small_disk
    spool = Spool(directory, max_page_count=page_limit)
    # Nothing listens on port 9: every batch has to go to the (tiny) spool.
    sink = HttpSink("http://127.0.0.1:9/v1/batch", secret="s", timeout=0.5)
    client = Client(
        sink,
        spool=spool,
        flush_interval=0.05,
        retry=RetryPolicy(base=30, cap=30),
        health_interval=None,
    )
    with caplog.at_level(logging.ERROR, logger="edgemetrics"):
        for n in range(40_000):
            # Random-looking ids defeat gzip so the disk fills fast.
            client.track(View(content_id=f"v{n}", session_id=os.urandom(16).hex()))
        assert client.flush(60)
        durable = client.track_durable(
            Purchase(amount_minor=100, currency="EUR", transaction_id="tx1")
        )
    counters = client.counters
    if durable:
        # A full disk can still take one small commit: SQLite rewrites a checkpointed WAL
        # in place, needing no new block. Then the purchase must really be on disk.
        assert [e["transaction_id"] for e in spooled_events(directory) if e["type"] == "purchase"]
        assert counters.durable_failures == 0
    else:
        assert counters.durable_failures == 1
    assert counters.dropped_spool_error > 0
    assert "disk is full" in caplog.text
    assert client.health().dropped_spool_full >= counters.dropped_spool_error
    # The host app keeps working: tracking still returns at once.
    client.track(View(content_id="after"))
    client.close(timeout=1)
    with pytest.raises(SpoolError) as info:
        Spool(directory, max_page_count=page_limit).put(bid(1), os.urandom(2_000_000), events=1)
    assert info.value.reason == "disk_full"


def test_a_spool_with_damaged_pages_is_quarantined_too(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for n in range(50):
        spool.put(bid(n), os.urandom(3000), events=1)
    spool.close()
    # Checkpoint the WAL into the file, then scribble over pages past the header.
    import sqlite3

    con = sqlite3.connect(tmp_path / FILENAME)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    with open(tmp_path / FILENAME, "r+b") as f:
        f.seek(4096 * 3)
        f.write(b"\xff" * 4096 * 10)
    reopened = Spool(tmp_path)
    stats = reopened.stats()
    assert len(stats.quarantined) == 1
    assert stats.batches == 0
    assert reopened.put(bid(99), b"fresh", events=1)
    reopened.close()


def test_a_closed_spool_is_never_mistaken_for_a_corrupt_one(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(bid(1), b"keep me", events=1)
    spool.close()
    with pytest.raises(SpoolError) as info:
        spool.stats()
    assert info.value.reason == "io"
    again = Spool(tmp_path)
    assert again.stats().batches == 1 and again.stats().quarantined == []
    again.close()
