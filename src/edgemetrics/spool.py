"""The disk spool: batches the sink has not accepted yet, in SQLite (WAL) in a chosen directory.

* A batch is deleted only when the sink accepted it (:meth:`Spool.ack`); a sender leases
  the batches it is shipping (:meth:`Spool.claim`), so a process killed mid-send leaves a
  lease that expires, or is released at once when its process is gone, and the batch is
  shipped again with the same batch id.
* Several processes may share one directory: SQLite's locking serialises writers and a
  lease keeps two senders off the same batch.
* Bounded by bytes and by age. Over the byte bound the oldest non-critical batches are
  dropped first; rows older than ``max_age`` are dropped unless critical (purchases and
  refunds are kept until delivered). Every dropped event is counted in the spool itself,
  so ``edgemetrics spool status`` reports drops from every process.
* Durable puts (purchases, refunds) commit with ``synchronous=FULL``: the WAL is fsynced
  before :meth:`Spool.put` returns. Ordinary batches use ``synchronous=NORMAL``.
* A file SQLite cannot read is moved aside (``*.corrupt-<time>``), reported, and a fresh
  spool is started.

>>> import tempfile
>>> spool = Spool(tempfile.mkdtemp())
>>> spool.put("a" * 32, b"payload", events=3)
True
>>> [row.batch_id[:4] for row in spool.claim()]
['aaaa']
>>> spool.claim()
[]
>>> spool.ack(["a" * 32])
>>> spool.stats().batches
0
>>> spool.close()
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("edgemetrics")

FILENAME = "spool.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    critical INTEGER NOT NULL,
    events INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    lease_pid INTEGER NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_created ON batches (created);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS health (
    pid INTEGER PRIMARY KEY,
    updated REAL NOT NULL,
    data TEXT NOT NULL
);
INSERT OR IGNORE INTO meta VALUES ('bytes', 0);
INSERT OR IGNORE INTO meta VALUES ('dropped_spool_full', 0);
INSERT OR IGNORE INTO meta VALUES ('dropped_expired', 0);
"""


class SpoolError(RuntimeError):
    """The spool could not store a batch (``reason``: ``disk_full``, ``corrupt``, ``io``)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    """One stored batch: its stable id, its body as it will be sent, and its bookkeeping."""

    batch_id: str
    body: bytes
    events: int
    critical: bool
    created: float
    attempts: int


@dataclass
class SpoolStats:
    """What is in the spool now, and what it has had to drop since it was created."""

    path: str
    batches: int = 0
    events: int = 0
    critical_events: int = 0
    in_flight: int = 0
    bytes: int = 0
    oldest_age_s: float = 0.0
    dropped_spool_full: int = 0
    dropped_expired: int = 0
    quarantined: list[str] = field(default_factory=list)
    # The last self-monitoring snapshot of each process using this spool, by pid.
    processes: list[dict[str, Any]] = field(default_factory=list)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Spool:
    """A SQLite spool in ``directory``; safe across threads and across processes."""

    def __init__(
        self,
        directory: str | Path,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        max_age: float = 7 * 24 * 3600,
        lease_s: float = 60.0,
        max_page_count: int | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILENAME
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.lease_s = lease_s
        # Test hook and hard cap: SQLite refuses to grow the file past this many pages.
        self.max_page_count = max_page_count
        self.quarantined: list[Path] = []
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._last_expiry = 0.0
        self.directory.mkdir(parents=True, exist_ok=True)
        self._open()

    # --- connections -------------------------------------------------------------

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        con = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        con.execute("PRAGMA busy_timeout = 30000")
        con.execute(f"PRAGMA synchronous = {synchronous}")
        if self.max_page_count is not None:
            con.execute(f"PRAGMA max_page_count = {int(self.max_page_count)}")
        return con

    def _open(self) -> None:
        try:
            self._con = self._connect("NORMAL")
            mode = self._con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.DatabaseError(f"journal_mode is {mode}, expected wal")
            check = self._con.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
            self._con.executescript(_SCHEMA)
            self._durable = self._connect("FULL")
            # A checkpoint would run inside a purchase's commit: leave it to the batched
            # connection (and the exporter thread), so a durable put pays one fsync only.
            self._durable.execute("PRAGMA wal_autocheckpoint = 0")
        except sqlite3.DatabaseError as exc:
            if _is_disk_full(exc):
                raise SpoolError("disk_full", f"spool {self.path}: {exc}") from exc
            if not _is_corrupt(exc) and not str(exc).startswith("quick_check"):
                raise SpoolError("io", f"spool {self.path}: {exc}") from exc
            self._quarantine(exc)
            self._con = self._connect("NORMAL")
            self._con.execute("PRAGMA journal_mode = WAL")
            self._con.executescript(_SCHEMA)
            self._durable = self._connect("FULL")
        self._release_dead_leases()

    def _quarantine(self, exc: BaseException) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = self.path.with_name(f"{FILENAME}.corrupt-{stamp}-{os.getpid()}")
        for con_name in ("_con", "_durable"):
            con = getattr(self, con_name, None)
            if con is not None:
                with contextlib.suppress(sqlite3.Error):
                    con.close()
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(target) + suffix))
        self.quarantined.append(target)
        log.error(
            "edgemetrics: spool %s is unreadable (%s); moved it to %s and started a fresh spool",
            self.path,
            exc,
            target,
        )

    def reopen_after_fork(self) -> None:
        """A forked child must not use its parent's SQLite handles: open its own."""
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._open()

    def close(self) -> None:
        """Close the connections (the file stays for the next process)."""
        with self._lock:
            for con in (self._con, self._durable):
                with contextlib.suppress(sqlite3.Error):
                    con.close()

    # --- writing -------------------------------------------------------------------

    def put(
        self,
        batch_id: str,
        body: bytes,
        *,
        events: int,
        critical: bool = False,
        durable: bool = False,
        attempts: int = 0,
    ) -> bool:
        """Store one batch; False when the byte bound left no room for it (it was dropped).

        ``durable`` commits with an fsync before returning; ``attempts`` says how often the
        batch was already tried (so a later send counts as a retry). Raises :class:`SpoolError`
        when SQLite cannot write (full disk, unreadable file).
        """
        size = len(body)
        now = time.time()
        with self._lock, self._transaction(self._durable if durable else self._con) as con:
            if not self._make_room(con, size, now, critical):
                con.execute(
                    "UPDATE meta SET value = value + ? WHERE key = 'dropped_spool_full'",
                    (events,),
                )
                log.warning(
                    "edgemetrics: spool over %d bytes; dropped a batch of %d events",
                    self.max_bytes,
                    events,
                )
                return False
            cur = con.execute(
                "INSERT OR IGNORE INTO batches "
                "(batch_id, created, critical, events, bytes, attempts, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (batch_id, now, int(critical), events, size, attempts, body),
            )
            if cur.rowcount:
                con.execute("UPDATE meta SET value = value + ? WHERE key = 'bytes'", (size,))
        return True

    def _make_room(self, con: sqlite3.Connection, size: int, now: float, critical: bool) -> bool:
        # Expiry scans old rows: batched puts do it, a purchase's put stays short.
        if not critical and now - self._last_expiry > 1.0:
            self._last_expiry = now
            self._expire(con, now)
        total = int(con.execute("SELECT value FROM meta WHERE key = 'bytes'").fetchone()[0])
        if total + size <= self.max_bytes:
            return True
        # Oldest non-critical first, skipping batches another sender is shipping now.
        rows = con.execute(
            "SELECT id, events, bytes FROM batches WHERE critical = 0 AND lease_until < ? "
            "ORDER BY id",
            (now,),
        ).fetchall()
        victims: list[int] = []
        dropped_events = 0
        for row_id, n, nbytes in rows:
            if total + size <= self.max_bytes:
                break
            victims.append(row_id)
            dropped_events += n
            total -= nbytes
        if victims:
            con.executemany("DELETE FROM batches WHERE id = ?", [(v,) for v in victims])
            con.execute("UPDATE meta SET value = ? WHERE key = 'bytes'", (max(total, 0),))
            con.execute(
                "UPDATE meta SET value = value + ? WHERE key = 'dropped_spool_full'",
                (dropped_events,),
            )
            log.warning(
                "edgemetrics: spool over %d bytes; dropped the %d oldest non-critical batches "
                "(%d events)",
                self.max_bytes,
                len(victims),
                dropped_events,
            )
        # Money is never dropped for room: a critical batch may exceed the byte bound.
        return critical or total + size <= self.max_bytes

    def _expire(self, con: sqlite3.Connection, now: float) -> None:
        row = con.execute(
            "SELECT count(*), total(events), total(bytes) FROM batches "
            "WHERE critical = 0 AND created < ? AND lease_until < ?",
            (now - self.max_age, now),
        ).fetchone()
        if row[0]:
            con.execute(
                "DELETE FROM batches WHERE critical = 0 AND created < ? AND lease_until < ?",
                (now - self.max_age, now),
            )
            con.execute("UPDATE meta SET value = value - ? WHERE key = 'bytes'", (row[2],))
            con.execute(
                "UPDATE meta SET value = value + ? WHERE key = 'dropped_expired'", (row[1],)
            )
            log.warning(
                "edgemetrics: dropped %d spooled events older than %.0f s",
                int(row[1]),
                self.max_age,
            )

    # --- reading -------------------------------------------------------------------

    def claim(self, limit: int = 1) -> list[SpooledBatch]:
        """Lease up to ``limit`` of the oldest unleased batches for sending."""
        now = time.time()
        with self._lock, self._transaction(self._con) as con:
            rows = con.execute(
                "UPDATE batches "
                "SET lease_pid = ?, lease_until = ?, attempts = attempts + 1 "
                "WHERE id IN (SELECT id FROM batches WHERE lease_until < ? "
                "ORDER BY id LIMIT ?) "
                "RETURNING id, batch_id, body, events, critical, created, attempts",
                (self._pid, now + self.lease_s, now, limit),
            ).fetchall()
        rows.sort()
        return [
            SpooledBatch(
                batch_id=r[1],
                body=r[2],
                events=r[3],
                critical=bool(r[4]),
                created=r[5],
                attempts=r[6],
            )
            for r in rows
        ]

    def ack(self, batch_ids: Iterable[str]) -> None:
        """The sink accepted these batches: delete them."""
        ids = [(b,) for b in batch_ids]
        if not ids:
            return
        with self._lock, self._transaction(self._con) as con:
            total = 0
            for (batch_id,) in ids:
                row = con.execute(
                    "DELETE FROM batches WHERE batch_id = ? RETURNING bytes", (batch_id,)
                ).fetchone()
                if row:
                    total += row[0]
            con.execute("UPDATE meta SET value = value - ? WHERE key = 'bytes'", (total,))

    def release(self, batch_ids: Iterable[str]) -> None:
        """Sending failed: give the batches back so they are tried again (oldest first)."""
        with self._lock:
            try:
                self._con.executemany(
                    "UPDATE batches SET lease_until = 0, lease_pid = 0 WHERE batch_id = ?",
                    [(b,) for b in batch_ids],
                )
            except sqlite3.DatabaseError as exc:
                raise self._error(exc) from exc

    def _release_dead_leases(self) -> None:
        """Batches leased by a process that no longer exists go back to the queue now."""
        with self._lock:
            try:
                pids = [
                    r[0]
                    for r in self._con.execute(
                        "SELECT DISTINCT lease_pid FROM batches WHERE lease_until >= ?",
                        (time.time(),),
                    )
                ]
                dead = [(p,) for p in pids if p != self._pid and not _alive(p)]
                if dead:
                    self._con.executemany(
                        "UPDATE batches SET lease_until = 0, lease_pid = 0 WHERE lease_pid = ?",
                        dead,
                    )
            except sqlite3.DatabaseError as exc:
                raise self._error(exc) from exc

    def record_health(self, snapshot: dict[str, Any]) -> None:
        """Keep this process's latest counters where ``spool status`` can read them."""
        with self._lock:
            try:
                self._con.execute(
                    "INSERT OR REPLACE INTO health VALUES (?, ?, ?)",
                    (self._pid, time.time(), orjson.dumps(snapshot).decode()),
                )
                # Snapshots of processes gone for a day are of no use to anyone.
                self._con.execute("DELETE FROM health WHERE updated < ?", (time.time() - 86400,))
            except sqlite3.DatabaseError as exc:
                raise self._error(exc) from exc

    def ready(self) -> bool:
        """True when some batch is waiting to be sent (not leased)."""
        with self._lock:
            try:
                row = self._con.execute(
                    "SELECT 1 FROM batches WHERE lease_until < ? LIMIT 1", (time.time(),)
                ).fetchone()
            except sqlite3.DatabaseError as exc:
                raise self._error(exc) from exc
        return row is not None

    def stats(self) -> SpoolStats:
        """Depth, bytes, age of the oldest batch and the drop counters."""
        now = time.time()
        with self._lock:
            try:
                self._release_dead_leases()
                row = self._con.execute(
                    "SELECT count(*), total(events), total(events * critical), "
                    "total(lease_until >= ?), total(bytes), min(created) FROM batches",
                    (now,),
                ).fetchone()
                meta = dict(self._con.execute("SELECT key, value FROM meta").fetchall())
                health = self._con.execute(
                    "SELECT pid, updated, data FROM health ORDER BY pid"
                ).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self._error(exc) from exc
        return SpoolStats(
            path=str(self.path),
            batches=int(row[0]),
            events=int(row[1]),
            critical_events=int(row[2]),
            in_flight=int(row[3]),
            bytes=int(row[4]),
            oldest_age_s=max(0.0, now - row[5]) if row[5] is not None else 0.0,
            dropped_spool_full=int(meta.get("dropped_spool_full", 0)),
            dropped_expired=int(meta.get("dropped_expired", 0)),
            processes=[
                {
                    "pid": pid,
                    "alive": _alive(pid),
                    "updated_s_ago": round(now - updated, 1),
                    **orjson.loads(data),
                }
                for pid, updated, data in health
            ],
            quarantined=[str(p) for p in self.quarantined]
            + sorted(
                str(p)
                for p in self.directory.glob(f"{FILENAME}.corrupt-*")
                if not str(p).endswith(("-wal", "-shm")) and p not in self.quarantined
            ),
        )

    @contextlib.contextmanager
    def _transaction(self, con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error; SQLite's errors
        become :class:`SpoolError` (disk full, corrupt file). Call with the lock held."""
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: sqlite3.DatabaseError) -> SpoolError:
        if _is_disk_full(exc):
            return SpoolError(
                "disk_full", f"spool {self.path}: the disk is full ({exc}); batch not stored"
            )
        if not _is_corrupt(exc):
            return SpoolError("io", f"spool {self.path}: {exc}")
        # The file no longer reads as a database: set it aside and start afresh.
        with self._lock:
            self._quarantine(exc)
            self._open()
        return SpoolError("corrupt", f"spool {self.path} was corrupt ({exc}); started afresh")


def _is_corrupt(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def _is_disk_full(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == sqlite3.SQLITE_FULL)
    return "disk is full" in str(exc).lower()
