"""Delivery guarantees with real processes, a real loopback collector and a real spool."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from support import Collector, producer, spooled_events, wait_until

from edgemetrics.spool import Spool


def eid(proc: int, thread: int, seq: int) -> str:
    return f"{proc:08x}{thread:08x}{seq:016x}"


def spooled_event_ids(spool_dir: Path) -> set[str]:
    """What is in the spool file now."""
    return {e["event_id"] for e in spooled_events(spool_dir)}


def spool_batches(spool_dir: Path) -> int:
    spool = Spool(spool_dir)
    try:
        return spool.stats().batches
    finally:
        spool.close()


def test_kill_9_under_load_then_restart_delivers_every_spooled_event_once(
    collector: Collector, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    collector.start()
    proc = producer(
        "--url",
        collector.url,
        "--spool",
        str(spool_dir),
        "--events",
        "0",
        "--pause-every",
        "50",
        "--pause",
        "0.01",
        "--flush-interval",
        "0.1",
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "STARTED"
    time.sleep(0.8)
    collector.stop()  # outage: batches pile up in the spool
    # Killed under load while the spool holds batches (waiting on the spool itself, not on
    # a fixed sleep, so a slow or fast machine tests the same thing).
    assert wait_until(lambda: len(spooled_event_ids(spool_dir)) >= 200, timeout=30), (
        "the outage should have left batches in the spool"
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    in_spool = spooled_event_ids(spool_dir)
    stored_before = set(collector.event_ids())
    assert in_spool

    collector.start()
    restarted = producer(
        "--url",
        collector.url,
        "--spool",
        str(spool_dir),
        "--proc",
        "7",
        "--events",
        "10",
        "--drain-wait",
        "30",
    )
    out, _ = restarted.communicate(timeout=60)
    assert "DONE" in out
    collector.stop()
    assert spool_batches(spool_dir) == 0
    stored = collector.event_ids()
    assert len(stored) == len(set(stored)), "an event was stored twice"
    missing = in_spool - set(stored)
    assert not missing, f"{len(missing)} spooled events never arrived"
    assert stored_before <= set(stored)
    assert {eid(7, 0, s) for s in range(10)} <= set(stored)


def test_collector_down_during_steady_traffic_everything_arrives(
    collector: Collector, tmp_path: Path
) -> None:
    collector.start()
    proc = producer(
        "--url",
        collector.url,
        "--spool",
        str(tmp_path / "spool"),
        "--threads",
        "2",
        "--events",
        "3000",
        "--pause-every",
        "100",
        "--pause",
        "0.03",
        "--flush-interval",
        "0.1",
        "--drain-wait",
        "30",
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "STARTED"
    time.sleep(0.3)
    collector.stop()
    time.sleep(0.8)
    collector.start()
    out, _ = proc.communicate(timeout=90)
    assert "DONE" in out
    spooled = int(out.split("spooled=")[1].split()[0])
    assert spooled > 0, "the outage should have sent batches to the spool"
    stats = collector.stats()
    collector.stop()
    stored = collector.event_ids()
    expected = {eid(0, t, s) for t in range(2) for s in range(3000)}
    assert set(stored) == expected
    assert len(stored) == len(expected)
    assert stats["accepted"] == stats["inserted"]


def test_purchase_survives_kill_right_after_the_handler_returns(
    collector: Collector, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    # The collector is down: the purchase can only survive through the fsynced spool.
    proc = producer("--url", collector.url, "--spool", str(spool_dir), "--purchase")
    assert proc.stdout is not None and proc.stdout.readline().strip() == "PURCHASE_RETURNED"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    collector.start()
    restarted = producer(
        "--url",
        collector.url,
        "--spool",
        str(spool_dir),
        "--proc",
        "3",
        "--events",
        "1",
        "--drain-wait",
        "20",
    )
    out, _ = restarted.communicate(timeout=60)
    assert "DONE" in out
    collector.stop()
    purchases = collector.event_ids("edgemetrics_commerce")
    assert purchases == [eid(0, 0, 1)]


def test_four_producers_with_threads_share_one_spool_no_loss_no_duplicates(
    collector: Collector, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    procs = [
        producer(
            "--url",
            collector.url,
            "--spool",
            str(spool_dir),
            "--proc",
            str(p),
            "--threads",
            "3",
            "--events",
            "1500",
            "--pause-every",
            "250",
            "--pause",
            "0.02",
            "--flush-interval",
            "0.1",
            "--drain-wait",
            "60",
        )
        for p in range(4)
    ]
    time.sleep(1.0)  # the collector is not up yet: every producer spools
    collector.start()
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert "DONE" in out, out
    assert wait_until(lambda: spool_batches(spool_dir) == 0, timeout=10)
    stats = collector.stats()
    collector.stop()
    stored = collector.event_ids()
    expected = {eid(p, t, s) for p in range(4) for t in range(3) for s in range(1500)}
    assert len(stored) == len(expected)
    assert set(stored) == expected
    # No event was delivered twice: every accepted event was new to the store.
    assert stats["accepted"] == stats["inserted"] == len(expected)


def test_forked_child_never_sends_the_parents_buffer(collector: Collector, tmp_path: Path) -> None:
    collector.start()
    proc = producer(
        "--url",
        collector.url,
        "--spool",
        str(tmp_path / "spool"),
        "--fork",
        "--flush-interval",
        "30",
    )
    out, _ = proc.communicate(timeout=60)
    assert "DONE fork" in out
    stats = collector.stats()
    collector.stop()
    stored = set(collector.event_ids())
    assert stored == {eid(0, 0, s) for s in range(100)} | {eid(1, 0, s) for s in range(50)}
    assert stats["accepted"] == 150
