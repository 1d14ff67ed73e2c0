"""Pseudonymisation, key rotation, crypto-shredding, opt-out, erasure and retention."""

from __future__ import annotations

import argparse
import csv
import hashlib
import hmac
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from support import spooled_events

import edgemetrics
from edgemetrics.client import Client
from edgemetrics.collector import CollectorSettings, create_collector_app
from edgemetrics.events import ApiCall, Purchase, View
from edgemetrics.layout import columns, encode
from edgemetrics.privacy import DAY, PrivacyStore, Pseudonymizer
from edgemetrics.privacy_command import add_command
from edgemetrics.retention import Retention, enforce_retention
from edgemetrics.signing import sign
from edgemetrics.sinks import MemorySink, StoreSink
from edgemetrics.spool import Spool
from edgemetrics.store import EmbeddedStore
from edgemetrics.wire import decode_body, encode_body, gzip_body

USER_COL = columns("content")["user_id"]


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="edgemetrics")
    add_command(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    result: int = args.func(args)
    return result


def files_bytes(*paths: Path) -> bytes:
    """Every byte of the given files and of their SQLite/DuckDB side files."""
    out = b""
    for path in paths:
        for candidate in [path, *path.parent.glob(path.name + "*")]:
            if candidate.is_file():
                out += candidate.read_bytes()
    return out


# --- pseudonymisation and keys ---------------------------------------------------------


def test_user_ids_leave_the_exporter_pseudonymised(tmp_path: Path) -> None:
    sink = MemorySink()
    keys = PrivacyStore(tmp_path / "keys.sqlite3")
    client = Client(sink, flush_interval=0.05, pseudonymizer=Pseudonymizer(keys))
    client.track(View(content_id="v1", user_id="user-1001"))
    client.track(View(content_id="v2", user_id="user-1001"))
    client.track(View(content_id="v3", user_id="user-2002"))
    client.track(View(content_id="v4"))
    assert client.flush()
    ids = [e.user_id for e in sink.events]
    assert "user-1001" not in ids and "user-2002" not in ids
    assert ids[0] == ids[1] != ids[2] and ids[3] is None
    assert ids[0] == keys.pseudonym("user-1001")
    client.close()


def test_the_pseudonym_is_a_keyed_hash_nobody_without_the_keys_can_recompute(
    tmp_path: Path,
) -> None:
    a = PrivacyStore(tmp_path / "a.sqlite3")
    b = PrivacyStore(tmp_path / "b.sqlite3")
    assert a.pseudonym("user-1001") != b.pseudonym("user-1001")
    plain = hashlib.sha256(b"user-1001").hexdigest()
    assert plain[:32] not in (a.pseudonym("user-1001") or "")
    # The same file opened again gives the same pseudonym (processes of one host agree).
    again = PrivacyStore(tmp_path / "a.sqlite3")
    assert again.pseudonym("user-1001") == a.pseudonym("user-1001")


def test_rotation_changes_pseudonyms_and_destroys_retired_keys_after_90_days(
    tmp_path: Path,
) -> None:
    now = [1_000_000.0]
    keys = PrivacyStore(tmp_path / "keys.sqlite3", clock=lambda: now[0])
    before = keys.pseudonym("user-1001")
    assert before is not None and before.startswith("k1-")
    now[0] += 89 * DAY
    keys.maintain()
    assert keys.pseudonym("user-1001") == before  # not due yet
    now[0] += 2 * DAY
    keys.maintain()
    after = keys.pseudonym("user-1001")
    assert after is not None and after.startswith("k2-") and after != before
    # The retired key still finds the old rows for an erasure request...
    assert set(keys.pseudonyms("user-1001").values()) == {before, after}
    now[0] += 91 * DAY
    keys.maintain()
    # ...until it is destroyed: then nothing can recompute the k1 pseudonyms.
    assert [k.state for k in keys.key_list()] == ["destroyed", "retired", "active"]
    assert before not in keys.pseudonyms("user-1001").values()
    con = sqlite3.connect(tmp_path / "keys.sqlite3")
    assert con.execute("SELECT secret FROM keys WHERE kid = 'k1'").fetchone() == (None,)


def test_crypto_shredding_makes_old_pseudonyms_unlinkable(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite3"
    keys = PrivacyStore(path)
    old = keys.pseudonym("user-1001")
    keys.pseudonym("user-2002")
    lookup = keys.lookup("user-1001")
    raw = sqlite3.connect(path)
    old_secret = raw.execute("SELECT secret FROM subjects WHERE lookup = ?", (lookup,)).fetchone()[
        0
    ]
    raw.close()

    assert list(keys.forget("user-1001").values()) == [old]
    new = keys.pseudonym("user-1001")
    assert new is not None and new != old
    keys.close()

    stored = files_bytes(path)
    assert old_secret not in stored
    assert old is not None and old.encode() not in stored
    # No secret left in the store, under any key, yields the old pseudonym.
    raw = sqlite3.connect(path)
    master = raw.execute("SELECT kid, secret FROM keys WHERE secret IS NOT NULL").fetchall()
    subjects = [r[0] for r in raw.execute("SELECT secret FROM subjects")]
    for kid, key in master:
        for secret in subjects:
            digest = hmac.new(key, secret, hashlib.sha256).hexdigest()[:32]
            assert f"{kid}-{digest}" != old


# --- opt-out ---------------------------------------------------------------------------


def test_the_exporter_drops_opted_out_users_and_counts_them(tmp_path: Path) -> None:
    sink = MemorySink()
    keys_path = tmp_path / "keys.sqlite3"
    client = Client(sink, flush_interval=0.05, pseudonymizer=Pseudonymizer(keys_path))
    client.track(View(content_id="v0", user_id="user-1001"))
    assert client.flush()
    # Opt-out recorded by another process (the CLI opens its own connection).
    assert cli("privacy", "opt-out", "--user", "user-1001", "--keys", str(keys_path)) == 0
    for i in range(3):
        client.track(View(content_id=f"v{i}", user_id="user-1001"))
        client.track(View(content_id=f"v{i}", user_id="user-2002"))
    assert client.flush()
    kept = [e.content_id for e in sink.events[1:]]
    assert kept == ["v0", "v1", "v2"]
    assert {e.user_id for e in sink.events[1:]} == {PrivacyStore(keys_path).pseudonym("user-2002")}
    assert client.counters.dropped_opted_out == 3
    # Opting back in restores recording.
    assert cli("privacy", "opt-in", "--user", "user-1001", "--keys", str(keys_path)) == 0
    client.track(View(content_id="back", user_id="user-1001"))
    assert client.flush()
    assert sink.events[-1].content_id == "back"
    client.close()


def test_durable_purchases_of_opted_out_users_are_not_spooled(tmp_path: Path) -> None:
    keys = PrivacyStore(tmp_path / "keys.sqlite3")
    keys.opt_out("user-1001")

    class Down:
        def write(self, batch: object) -> int:
            raise ConnectionError("down")

        def close(self) -> None:
            pass

    client = Client(
        Down(),
        flush_interval=60,
        spool=tmp_path / "spool",
        pseudonymizer=Pseudonymizer(keys),
    )
    purchase = {"amount_minor": 100, "currency": "EUR", "creator_id": "c1"}
    assert not client.track_durable(Purchase(transaction_id="t1", user_id="user-1001", **purchase))
    assert client.track_durable(Purchase(transaction_id="t2", user_id="user-2002", **purchase))
    events = spooled_events(tmp_path / "spool")
    assert [e["transaction_id"] for e in events] == ["t2"]
    assert events[0]["user_id"] == keys.pseudonym("user-2002")
    client.close(timeout=0.5)


def test_the_collector_drops_opted_out_pseudonyms(tmp_path: Path) -> None:
    keys = PrivacyStore(tmp_path / "keys.sqlite3")
    opted = keys.pseudonym("user-1001")
    other = keys.pseudonym("user-2002")
    keys.opt_out("user-1001")
    store = EmbeddedStore(tmp_path / "em.duckdb")
    app = create_collector_app(store, settings=CollectorSettings(secret="s", privacy=keys))
    body = encode_body(
        "b" * 32,
        [
            View(content_id="v1", user_id=opted),
            View(content_id="v2", user_id=other),
            View(content_id="v3", user_id="user-1001"),  # a sender without pseudonymizer
        ],
    )
    with TestClient(app) as http:
        answer = http.post("/v1/batch", content=body, headers=sign(body, "s"))
    assert answer.status_code == 200 and answer.json()["rejected"] == []
    rows = store.query(f"SELECT blob2 AS content, {USER_COL} AS u FROM edgemetrics_content")
    assert rows == [{"content": "v2", "u": other}]
    assert app.state.batch_endpoint.stats["opted_out"] == 2
    store.close()


# --- erasure ---------------------------------------------------------------------------


def _seed(tmp_path: Path) -> tuple[Path, Path, Path, str, str]:
    """A store and a spool holding events of two users, written through the exporter."""
    keys_path = tmp_path / "keys.sqlite3"
    store_path = tmp_path / "em.duckdb"
    spool_dir = tmp_path / "spool"
    store = EmbeddedStore(store_path)
    client = Client(StoreSink(store), flush_interval=0.05, pseudonymizer=Pseudonymizer(keys_path))
    for user in ("user-1001", "user-2002"):
        client.track(View(content_id="v1", user_id=user))
        client.track(
            ApiCall(method="GET", route="/v", status_code=200, duration_ms=1, user_id=user)
        )
        client.track(
            Purchase(amount_minor=500, currency="EUR", transaction_id=f"t-{user}", user_id=user)
        )
    assert client.flush()
    client.close()
    store.close()
    # A batch still waiting in the spool, mixing both users (as the exporter writes it).
    keys = PrivacyStore(keys_path)
    mine, theirs = keys.pseudonym("user-1001"), keys.pseudonym("user-2002")
    assert mine and theirs
    keys.close()
    spool = Spool(spool_dir)
    events = [
        View(content_id="s1", user_id=mine),
        View(content_id="s2", user_id=theirs),
        View(content_id="s3", user_id=mine),
    ]
    spool.put("c" * 32, gzip_body(encode_body("c" * 32, events)), events=3)
    spool.put("d" * 32, gzip_body(encode_body("d" * 32, events[:1])), events=1)
    spool.close()
    return keys_path, store_path, spool_dir, mine, theirs


def test_privacy_delete_removes_the_user_everywhere_and_reports_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys_path, store_path, spool_dir, mine, theirs = _seed(tmp_path)
    store = EmbeddedStore(store_path)
    # A rollup table that keeps a user column (issue 6's rollups hold none; this one does).
    store.execute("CREATE TABLE edgemetrics_rollup_user_day (day DATE, user_id VARCHAR, n INT)")
    store.execute(
        "INSERT INTO edgemetrics_rollup_user_day VALUES "
        f"('2026-01-01', '{mine}', 3), ('2026-01-01', '{theirs}', 2)"
    )
    store.close()

    status = cli(
        "privacy",
        "delete",
        "--user",
        "user-1001",
        "--keys",
        str(keys_path),
        "--store",
        str(store_path),
        "--spool",
        str(spool_dir),
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "store:edgemetrics_content: 1 event(s) removed" in out
    assert "store:edgemetrics_commerce: 1 event(s) removed" in out
    assert "store:edgemetrics_platform: 1 event(s) removed" in out
    assert "spool: 3 event(s) removed" in out
    assert "rollups:edgemetrics_rollup_user_day: 1 event(s) removed" in out
    assert "user secret destroyed" in out

    store = EmbeddedStore(store_path)
    for family in ("content", "commerce", "platform"):
        column = columns(family)["user_id"]
        users = {r["u"] for r in store.query(f"SELECT {column} AS u FROM edgemetrics_{family}")}
        assert users == {theirs}, family
    rollup = store.query("SELECT user_id FROM edgemetrics_rollup_user_day")
    assert rollup == [{"user_id": theirs}]
    store.close()
    # The other user's spooled event is still there, under the same batch id.
    spool = Spool(spool_dir)
    rows = spool.claim(10)
    assert [r.batch_id for r in rows] == ["c" * 32]
    assert [e["content_id"] for e in decode_body(rows[0].body, gzipped=True)[1]] == ["s2"]
    assert spool.stats().events == 1
    spool.close()
    # No byte of the store, the spool or the key store holds the erased pseudonym.
    stored = files_bytes(store_path, spool_dir / "spool.sqlite3", keys_path)
    assert mine.encode() not in stored
    assert theirs.encode() in files_bytes(store_path)  # the scan would see it
    # The key store no longer yields that pseudonym: AE's copies are unlinkable.
    assert mine not in PrivacyStore(keys_path).pseudonyms("user-1001").values()


def test_delete_says_when_the_store_is_held_by_another_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess
    import sys

    store_path = tmp_path / "em.duckdb"
    EmbeddedStore(store_path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', "
            "flush=True); time.sleep(30)",
            str(store_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        status = cli(
            "privacy",
            "delete",
            "--user",
            "u-1",
            "--keys",
            str(tmp_path / "k"),
            "--store",
            str(store_path),
        )
    finally:
        holder.kill()
        holder.wait()
    assert status == 2
    assert "open in another process" in capsys.readouterr().err


# --- retention -------------------------------------------------------------------------


def test_the_store_enforces_90_days_raw_and_2_years_of_rollups(tmp_path: Path) -> None:
    now = [datetime(2026, 6, 1, 12, tzinfo=UTC)]
    export_dir = tmp_path / "expiring"
    retention = Retention(clock=lambda: now[0], every_s=0, export_dir=export_dir)
    store = EmbeddedStore(tmp_path / "em.duckdb", retention=retention)
    store.execute("CREATE TABLE edgemetrics_rollup_daily (day DATE, content_id VARCHAR, n INT)")
    store.execute(
        "INSERT INTO edgemetrics_rollup_daily VALUES "
        "('2024-05-31', 'old', 1), ('2024-06-02', 'kept', 1)"
    )
    day = timedelta(days=1)
    store.write(
        [
            encode(View(content_id="expired", timestamp=now[0] - 91 * day)),
            encode(View(content_id="fresh", timestamp=now[0] - 89 * day)),
        ]
    )
    contents = [r["c"] for r in store.query("SELECT blob2 AS c FROM edgemetrics_content")]
    assert contents == ["fresh"]
    assert [r["content_id"] for r in store.query("SELECT * FROM edgemetrics_rollup_daily")] == [
        "kept"
    ]
    # What expired was exported to CSV first, with field names.
    files = sorted(export_dir.glob("*.csv"))
    assert [f.name.split("-before-")[0] for f in files] == [
        "edgemetrics_content",
        "edgemetrics_rollup_daily",
    ]
    with files[0].open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["content_id"] for r in rows] == ["expired"]
    # The clock moves on: the "fresh" row expires on a later write.
    now[0] += 2 * day
    store.write([encode(View(content_id="today", timestamp=now[0]))])
    contents = [r["c"] for r in store.query("SELECT blob2 AS c FROM edgemetrics_content")]
    assert contents == ["today"]
    store.close()


def test_privacy_export_writes_rows_before_a_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_path = tmp_path / "em.duckdb"
    store = EmbeddedStore(store_path)
    base = datetime(2026, 3, 1, tzinfo=UTC)
    store.write(
        [encode(View(content_id=f"v{i}", timestamp=base + timedelta(days=i))) for i in range(5)]
    )
    store.close()
    out = tmp_path / "csv"
    assert (
        cli(
            "privacy",
            "export",
            "--store",
            str(store_path),
            "--before",
            "2026-03-03",
            "--out",
            str(out),
        )
        == 0
    )
    assert "edgemetrics_content: 2 row(s)" in capsys.readouterr().out
    (path,) = out.glob("edgemetrics_content-*.csv")
    with path.open() as handle:
        assert [r["content_id"] for r in csv.DictReader(handle)] == ["v0", "v1"]
    # Exporting is read-only: retention then deletes, by its own clock.
    store = EmbeddedStore(store_path)
    assert store.query("SELECT count(*) AS n FROM edgemetrics_content")[0]["n"] == 5
    report = enforce_retention(store, now=base + timedelta(days=92))
    assert report.deleted["edgemetrics_content"] == 2
    store.close()


def test_configure_with_a_store_path_enforces_retention_and_pseudonymises(
    tmp_path: Path,
) -> None:
    client = edgemetrics.configure(
        store_path=tmp_path / "em.duckdb",
        pseudonymizer=tmp_path / "keys.sqlite3",
        flush_interval=0.05,
    )
    old = datetime.now(UTC) - timedelta(days=120)
    edgemetrics.track(View(content_id="old", timestamp=old, user_id="user-1001"))
    edgemetrics.track(View(content_id="new", user_id="user-1001"))
    assert edgemetrics.flush()
    store = client.sink.store  # type: ignore[attr-defined]
    rows = store.query(f"SELECT blob2 AS c, {USER_COL} AS u FROM edgemetrics_content")
    edgemetrics.shutdown()
    assert [r["c"] for r in rows] == ["new"]
    assert rows[0]["u"] == PrivacyStore(tmp_path / "keys.sqlite3").pseudonym("user-1001")


def test_a_forked_child_reopens_the_key_store_even_if_the_parent_held_its_lock(
    tmp_path: Path,
) -> None:
    import os
    import select
    import signal
    import threading

    client = Client(MemorySink(), flush_interval=60, pseudonymizer=Pseudonymizer(tmp_path / "k"))
    expected = client.pseudonymizer.pseudonym("user-1001")
    read_end, write_end = os.pipe()
    # Fork while another thread of the parent is inside the key store.
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with client.pseudonymizer._lock, client.pseudonymizer.store._lock:
            inside.set()
            leave.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: the fork handler reset the client's privacy state
        try:
            os.write(write_end, (client.pseudonymizer.pseudonym("user-1001") or "").encode())
        finally:
            os._exit(0)
    leave.set()
    holder.join()
    os.close(write_end)
    ready: list[int] = []
    try:
        ready, _, _ = select.select([read_end], [], [], 20)
        assert ready, "the child hung on a lock inherited from the parent"
        assert os.read(read_end, 200).decode() == expected
    finally:
        if not ready:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        client.close()


def test_an_opt_out_applies_to_the_next_batch_after_batches_without_user_ids(
    tmp_path: Path,
) -> None:
    # Batches without user ids skip the key store; one with user ids never does.
    keys = PrivacyStore(tmp_path / "keys.sqlite3")
    sink = MemorySink()
    client = Client(sink, flush_interval=60, pseudonymizer=Pseudonymizer(keys))
    client.track(View(content_id="anonymous"))
    assert client.flush()
    PrivacyStore(tmp_path / "keys.sqlite3").opt_out("user-1001")  # another process
    client.track(View(content_id="anonymous-2"))
    client.track(View(content_id="gone", user_id="user-1001"))
    client.track(View(content_id="kept", user_id="user-2002"))
    assert client.flush()
    assert [e.content_id for e in sink.events] == ["anonymous", "anonymous-2", "kept"]
    assert sink.events[-1].user_id == keys.pseudonym("user-2002")
    assert client.counters.dropped_opted_out == 1
    client.close()
