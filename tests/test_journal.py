"""The collector's journal: records survive restarts, torn tails and full disks."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from support import child_env

from edgemetrics.journal import Journal


def test_records_come_back_in_order_until_they_are_done(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=100)  # a new segment every couple of writes
    written = []
    for n in range(6):
        payloads = [f"record {n}-{k}".encode() for k in range(3)]
        written.append((journal.append(payloads), payloads))
    journal.close()
    assert len(list(tmp_path.glob("seg-*.log"))) > 1

    again = Journal(tmp_path)
    recovered = list(again.recover())
    assert [p for _, p in recovered] == [p for _, payloads in written for p in payloads]
    assert [s for s, _ in recovered] == [s for s, payloads in written for _ in payloads]
    # Reported done segment by segment: each file goes once all its records are done.
    for segment in sorted({s for s, _ in recovered}):
        again.done(segment, sum(1 for s, _ in recovered if s == segment))
    assert list(tmp_path.glob("seg-*.log")) == []
    again.close()


def test_a_record_cut_short_by_a_crash_ends_its_segment(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    segment = journal.append([b"whole one", b"whole two"])
    journal.close()
    path = next(tmp_path.glob("seg-*.log"))
    with path.open("ab") as f:  # a crash in mid-write: a header and half a payload
        f.write((1000).to_bytes(4, "little") + (0).to_bytes(4, "little") + b"half")
    again = Journal(tmp_path)
    assert list(again.recover()) == [(segment, b"whole one"), (segment, b"whole two")]
    # New records go to a new segment; the old one goes once its records are done.
    newer = again.append([b"after the crash"])
    assert newer != segment
    again.done(segment, 2)
    assert not path.exists()
    again.close()
    assert [p for _, p in Journal(tmp_path).recover()] == [b"after the crash"]


def test_a_full_disk_raises_and_leaves_only_whole_records(tmp_path: Path) -> None:
    # A real write error from the kernel: the child may not grow a file past 64 KiB.
    script = textwrap.dedent(
        f"""
        import resource, signal
        from edgemetrics.journal import Journal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        journal = Journal({str(tmp_path)!r}, segment_bytes=1 << 30)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
        ok = 0
        for n in range(100):
            try:
                journal.append([bytes([n]) * 10_000])
            except OSError as exc:
                print("ERROR", exc.errno)
                break
            ok += 1
        print("OK", ok)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=child_env(), check=True
    ).stdout
    assert "ERROR" in out
    ok = int(out.split("OK ")[1])
    assert 0 < ok < 7
    payloads = [p for _, p in Journal(tmp_path).recover()]
    assert payloads == [bytes([n]) * 10_000 for n in range(ok)]


def test_a_long_journal_is_moved_into_the_store_in_row_groups_at_start(tmp_path: Path) -> None:
    import time

    from edgemetrics.collector import _Intake, _payload
    from edgemetrics.columnar import Columns
    from edgemetrics.events import View
    from edgemetrics.layout import encode
    from edgemetrics.store import EmbeddedStore

    journal = Journal(tmp_path / "journal", segment_bytes=20_000)
    expected = set()
    for _ in range(30):  # what a crashed collector left: 30 answered batches of 50 events
        points = [encode(View(content_id="v1", creator_id="c1")) for _ in range(50)]
        expected.update(p.event_id for p in points)
        columns = Columns()
        columns.add_points(points)
        journal.append([_payload(columns)])
    journal.close()

    store = EmbeddedStore(tmp_path / "store.duckdb")
    intake = _Intake(store, tmp_path / "journal", min_insert_rows=200)
    deadline = time.monotonic() + 30
    while intake.moved < 1500 and time.monotonic() < deadline:
        time.sleep(0.05)
    intake.close()
    assert intake.inserted == 1500 and intake.pending_events() == 0
    assert 1 < intake.inserts <= 8  # in groups of at least 200 rows, not one per batch
    ids = {r["event_id"] for r in store.query("SELECT event_id FROM edgemetrics_content")}
    assert ids == expected
    assert list((tmp_path / "journal").glob("seg-*.log")) == []
    store.close()
