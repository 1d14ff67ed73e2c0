"""Pseudonymous user ids, key rotation, crypto-shredding and the per-user opt-out registry.

User ids never leave the host process as given. The exporter thread replaces each one by
a pseudonym before serialising a batch::

    pseudonym = kid "-" hex(HMAC-SHA256(key[kid], subject_secret))[:32]

* ``key[kid]`` is the active **master key**. Keys rotate (:meth:`PrivacyStore.rotate`):
  the new key makes the pseudonyms from then on, the retired one is kept only to find the
  rows it made when someone asks for deletion, and is destroyed once no raw row made with
  it can still exist (90 days, the raw retention). :meth:`PrivacyStore.maintain` applies
  that policy; the exporter calls it.
* ``subject_secret`` is a random 32-byte secret per user, found through a keyed lookup
  hash of the user id (the store never holds a user id). Destroying it
  (:meth:`PrivacyStore.forget`) is **crypto-shredding**: the pseudonyms already written to
  Analytics Engine, which cannot delete rows, can no longer be linked to that user by
  anyone, us included; the same user id seen again gets a new secret and a new pseudonym.

The store is a small SQLite file (WAL, ``secure_delete`` on, so a destroyed secret is
overwritten in place). The processes of one host share it; in-memory stores (no path)
keep pseudonyms stable for the life of the process only.

Opt-out (objection, GDPR art. 21): :meth:`PrivacyStore.opt_out` marks a user; the
exporter drops that user's events before export (counted as ``dropped_opted_out``), and
:func:`drop_opted_out_columns` lets the collector drop events that carry the user's
pseudonym.

>>> store = PrivacyStore()
>>> p = Pseudonymizer(store)
>>> first = p.pseudonym("user-42")
>>> first == p.pseudonym("user-42"), first.startswith("k1-"), len(first)
(True, True, 35)
>>> store.opt_out("user-42")
>>> p.pseudonym("user-42") is None
True
>>> store.close()
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgemetrics.events import FAMILIES, Event
from edgemetrics.layout import columns, dataset_name

if TYPE_CHECKING:
    from edgemetrics.columnar import Columns

log = logging.getLogger("edgemetrics")

DAY = 86_400.0
# The rotation policy (docs/privacy.md): a new master key every 90 days; a retired key is
# destroyed 90 days after retirement, when the raw rows it made have expired everywhere.
ROTATE_AFTER_S = 90 * DAY
DESTROY_RETIRED_AFTER_S = 90 * DAY
PSEUDONYM_HEX = 32  # 128 bits: collision-free at any realistic audience size

# Where the user id sits in each dataset's blobs (for collectors, which see data points).
_USER_BLOB: dict[str, int] = {
    dataset_name(f): int(columns(f)["user_id"][4:]) - 1 for f in FAMILIES if "user_id" in columns(f)
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kid TEXT NOT NULL UNIQUE,
    secret BLOB,
    created REAL NOT NULL,
    retired REAL,
    destroyed REAL
);
CREATE TABLE IF NOT EXISTS subjects (
    lookup BLOB PRIMARY KEY,
    secret BLOB NOT NULL,
    created REAL NOT NULL,
    opted_out INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS opted_out_pseudonyms (
    pseudonym TEXT PRIMARY KEY,
    lookup BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class KeyInfo:
    """A master key's public facts (never its secret)."""

    kid: str
    created: float
    retired: float | None
    destroyed: float | None

    @property
    def state(self) -> str:
        """``active``, ``retired`` or ``destroyed``."""
        if self.destroyed is not None:
            return "destroyed"
        return "retired" if self.retired is not None else "active"


class PrivacyStore:
    """The key store and opt-out registry: one SQLite file (``None``: in memory).

    Thread-safe; several processes may open the same file.
    """

    def __init__(
        self, path: str | Path | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.clock = clock
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()

    def _open(self) -> None:
        self._lock = threading.RLock()
        self._generation = getattr(self, "_generation", 0) + 1
        target = str(self.path) if self.path is not None else ":memory:"
        self._con = sqlite3.connect(
            target, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._con.execute("PRAGMA busy_timeout = 30000")
        # A shredded secret is overwritten in the file, not just unlinked from the b-tree.
        self._con.execute("PRAGMA secure_delete = ON")
        if self.path is not None:
            self._con.execute("PRAGMA journal_mode = WAL")
            self._con.execute("PRAGMA synchronous = FULL")
        self._con.executescript(_SCHEMA)
        with self._transaction() as con:
            row = con.execute("SELECT value FROM meta WHERE key = 'lookup_key'").fetchone()
            if row is None:
                con.execute("INSERT INTO meta VALUES ('lookup_key', ?)", (secrets.token_bytes(32),))
                row = con.execute("SELECT value FROM meta WHERE key = 'lookup_key'").fetchone()
        self._lookup_key: bytes = bytes(row[0])

    # --- plumbing --------------------------------------------------------------------

    class _Tx:
        def __init__(self, store: PrivacyStore, invalidates: bool) -> None:
            self.store = store
            self.invalidates = invalidates

        def __enter__(self) -> sqlite3.Connection:
            self.store._lock.acquire()
            con = self.store._con
            con.execute("BEGIN IMMEDIATE")
            return con

        def __exit__(self, kind: object, exc: object, tb: object) -> None:
            con = self.store._con
            try:
                con.execute("COMMIT" if kind is None else "ROLLBACK")
            finally:
                if self.invalidates:
                    # After the commit: a cache filled from here on sees the change.
                    self.store._generation += 1
                self.store._lock.release()

    def _transaction(self, *, invalidates: bool = False) -> PrivacyStore._Tx:
        # ``invalidates``: the change can alter a cached pseudonym or opt-out decision.
        return PrivacyStore._Tx(self, invalidates)

    def reopen_after_fork(self) -> None:
        """In a forked child: never use the parent's SQLite handle or locks; open anew.

        An in-memory store starts over with a new key (its pseudonyms were per-process).
        """
        self._open()

    def data_version(self) -> tuple[int, int]:
        """Changes whenever this store or another process changed opt-outs, subjects or
        keys: caches check it. (SQLite's ``data_version`` only sees other connections.)"""
        with self._lock:
            theirs = int(self._con.execute("PRAGMA data_version").fetchone()[0])
            return theirs, self._generation

    def close(self) -> None:
        """Close the file (a checkpoint folds the WAL back in)."""
        with self._lock:
            try:
                if self.path is not None:
                    self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._con.close()

    def lookup(self, user_id: str) -> bytes:
        """The keyed lookup hash under which a user's secret and opt-out are filed."""
        return hmac.new(self._lookup_key, user_id.encode("utf-8"), hashlib.sha256).digest()

    # --- master keys -----------------------------------------------------------------

    def _live_keys(self, con: sqlite3.Connection) -> list[tuple[str, bytes, bool]]:
        rows = con.execute(
            "SELECT kid, secret, retired IS NULL FROM keys WHERE destroyed IS NULL ORDER BY seq"
        ).fetchall()
        return [(kid, bytes(secret), bool(active)) for kid, secret, active in rows]

    def _ensure_active(self, con: sqlite3.Connection) -> tuple[str, bytes]:
        for kid, secret, active in self._live_keys(con):
            if active:
                return kid, secret
        return self._new_key(con)

    def _new_key(self, con: sqlite3.Connection) -> tuple[str, bytes]:
        seq = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM keys").fetchone()[0]
        kid, secret = f"k{seq}", secrets.token_bytes(32)
        con.execute(
            "INSERT INTO keys (kid, secret, created) VALUES (?, ?, ?)", (kid, secret, self.clock())
        )
        return kid, secret

    def key_list(self) -> list[KeyInfo]:
        """Every master key ever made, oldest first (secrets are not returned).

        >>> store = PrivacyStore()
        >>> _ = store.active_kid(); _ = store.rotate()
        >>> [(k.kid, k.state) for k in store.key_list()]
        [('k1', 'retired'), ('k2', 'active')]
        """
        with self._lock:
            rows = self._con.execute(
                "SELECT kid, created, retired, destroyed FROM keys ORDER BY seq"
            ).fetchall()
        return [KeyInfo(*row) for row in rows]

    def active_kid(self) -> str:
        """The id of the key that makes pseudonyms now (made on first use)."""
        with self._transaction() as con:
            return self._ensure_active(con)[0]

    def rotate(self) -> str:
        """Retire the active key and make a new one; returns the new key id."""
        with self._transaction(invalidates=True) as con:
            now = self.clock()
            con.execute("UPDATE keys SET retired = ? WHERE retired IS NULL", (now,))
            kid, secret = self._new_key(con)
            # Opted-out users stay recognisable to collectors under the new key too.
            for lookup, subject in con.execute(
                "SELECT lookup, secret FROM subjects WHERE opted_out = 1"
            ).fetchall():
                con.execute(
                    "INSERT OR IGNORE INTO opted_out_pseudonyms VALUES (?, ?)",
                    (_pseudonym(kid, secret, bytes(subject)), lookup),
                )
        log.info("edgemetrics: privacy key rotated; %s now makes pseudonyms", kid)
        return kid

    def destroy_retired(self, older_than_s: float = DESTROY_RETIRED_AFTER_S) -> list[str]:
        """Destroy keys retired more than ``older_than_s`` ago; returns their ids."""
        with self._transaction(invalidates=True) as con:
            cutoff = self.clock() - older_than_s
            kids = [
                r[0]
                for r in con.execute(
                    "SELECT kid FROM keys WHERE retired IS NOT NULL AND retired <= ? "
                    "AND destroyed IS NULL",
                    (cutoff,),
                )
            ]
            for kid in kids:
                con.execute(
                    "UPDATE keys SET secret = NULL, destroyed = ? WHERE kid = ?",
                    (self.clock(), kid),
                )
                con.execute(
                    "DELETE FROM opted_out_pseudonyms WHERE pseudonym LIKE ?", (kid + "-%",)
                )
        if kids:
            self._checkpoint()
            log.info("edgemetrics: retired privacy keys destroyed: %s", ", ".join(kids))
        return kids

    def maintain(
        self,
        *,
        rotate_after_s: float = ROTATE_AFTER_S,
        destroy_after_s: float = DESTROY_RETIRED_AFTER_S,
    ) -> None:
        """Apply the rotation policy: rotate an active key older than ``rotate_after_s``,
        destroy keys retired more than ``destroy_after_s`` ago.

        >>> now = [0.0]
        >>> store = PrivacyStore(clock=lambda: now[0])
        >>> store.active_kid()
        'k1'
        >>> now[0] = 91 * DAY; store.maintain(); store.active_kid()
        'k2'
        >>> now[0] = 182 * DAY; store.maintain(); [k.state for k in store.key_list()]
        ['destroyed', 'retired', 'active']
        """
        with self._lock:
            row = self._con.execute(
                "SELECT created FROM keys WHERE retired IS NULL AND destroyed IS NULL"
            ).fetchone()
        if row is not None and self.clock() - row[0] >= rotate_after_s:
            self.rotate()
        self.destroy_retired(destroy_after_s)

    # --- subjects --------------------------------------------------------------------

    def _subject(
        self, con: sqlite3.Connection, lookup: bytes, *, create: bool
    ) -> tuple[bytes, bool] | None:
        row = con.execute(
            "SELECT secret, opted_out FROM subjects WHERE lookup = ?", (lookup,)
        ).fetchone()
        if row is not None:
            return bytes(row[0]), bool(row[1])
        if not create:
            return None
        secret = secrets.token_bytes(32)
        con.execute(
            "INSERT INTO subjects (lookup, secret, created) VALUES (?, ?, ?)",
            (lookup, secret, self.clock()),
        )
        return secret, False

    def pseudonym(self, user_id: str) -> str | None:
        """The user's pseudonym under the active key; None when the user opted out."""
        lookup = self.lookup(user_id)
        with self._lock:
            # Read first: a known user costs no write transaction.
            con = self._con
            found = self._subject(con, lookup, create=False)
            keys = self._live_keys(con)
        active = next(((kid, secret) for kid, secret, a in keys if a), None)
        if found is None or active is None:
            with self._transaction() as con:
                found = self._subject(con, lookup, create=True)
                active = self._ensure_active(con)
        assert found is not None
        secret, opted_out = found
        if opted_out:
            return None
        return _pseudonym(active[0], active[1], secret)

    def pseudonyms(self, user_id: str) -> dict[str, str]:
        """The user's pseudonym under every live key (for deletion); {} for a stranger."""
        lookup = self.lookup(user_id)
        with self._lock:
            found = self._subject(self._con, lookup, create=False)
            keys = self._live_keys(self._con)
        if found is None:
            return {}
        return {kid: _pseudonym(kid, key, found[0]) for kid, key, _ in keys}

    def forget(self, user_id: str) -> dict[str, str]:
        """Crypto-shred a user: destroy their secret, so no pseudonym made for them so far
        can be recomputed or linked to them. Returns the pseudonyms that were destroyed
        (the caller deletes the rows it still can with them).

        An opt-out survives: the user is filed again under a fresh secret, still opted out.

        >>> store = PrivacyStore()
        >>> old = store.pseudonym("u-1")
        >>> list(store.forget("u-1").values()) == [old]
        True
        >>> store.pseudonym("u-1") != old
        True
        """
        lookup = self.lookup(user_id)
        with self._transaction(invalidates=True) as con:
            found = self._subject(con, lookup, create=False)
            if found is None:
                return {}
            secret, opted_out = found
            gone = {kid: _pseudonym(kid, key, secret) for kid, key, _ in self._live_keys(con)}
            con.execute("DELETE FROM subjects WHERE lookup = ?", (lookup,))
            con.execute("DELETE FROM opted_out_pseudonyms WHERE lookup = ?", (lookup,))
            if opted_out:
                self._file_opt_out(con, lookup)
        self._checkpoint()
        return gone

    def _checkpoint(self) -> None:
        # Fold the WAL into the main file (secure_delete zeroes the freed cells there) and
        # truncate it, so no copy of a destroyed secret stays in the WAL.
        if self.path is None:
            return
        with self._lock:
            busy = self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            log.warning(
                "edgemetrics: privacy store checkpoint incomplete (readers active); "
                "it completes on the next checkpoint"
            )

    # --- opt-out ---------------------------------------------------------------------

    def _file_opt_out(self, con: sqlite3.Connection, lookup: bytes) -> None:
        found = self._subject(con, lookup, create=True)
        assert found is not None
        con.execute("UPDATE subjects SET opted_out = 1 WHERE lookup = ?", (lookup,))
        for kid, key, _ in self._live_keys(con):
            con.execute(
                "INSERT OR IGNORE INTO opted_out_pseudonyms VALUES (?, ?)",
                (_pseudonym(kid, key, found[0]), lookup),
            )

    def opt_out(self, user_id: str) -> None:
        """Record a user's objection: their events are dropped from now on."""
        with self._transaction(invalidates=True) as con:
            self._ensure_active(con)
            self._file_opt_out(con, self.lookup(user_id))

    def opt_in(self, user_id: str) -> None:
        """Withdraw an opt-out."""
        lookup = self.lookup(user_id)
        with self._transaction(invalidates=True) as con:
            con.execute("UPDATE subjects SET opted_out = 0 WHERE lookup = ?", (lookup,))
            con.execute("DELETE FROM opted_out_pseudonyms WHERE lookup = ?", (lookup,))

    def is_opted_out(self, user_id: str) -> bool:
        """True when ``user_id`` (a raw id or a pseudonym) belongs to an opted-out user."""
        lookup = self.lookup(user_id)
        with self._lock:
            row = self._con.execute(
                "SELECT 1 FROM subjects WHERE lookup = ? AND opted_out = 1 "
                "UNION ALL SELECT 1 FROM opted_out_pseudonyms WHERE pseudonym = ? LIMIT 1",
                (lookup, user_id),
            ).fetchone()
        return row is not None

    def opted_out_pseudonyms(self) -> frozenset[str]:
        """Every pseudonym of every opted-out user under the live keys."""
        with self._lock:
            rows = self._con.execute("SELECT pseudonym FROM opted_out_pseudonyms").fetchall()
        return frozenset(r[0] for r in rows)


def _pseudonym(kid: str, key: bytes, subject_secret: bytes) -> str:
    digest = hmac.new(key, subject_secret, hashlib.sha256).hexdigest()
    return f"{kid}-{digest[:PSEUDONYM_HEX]}"


class Pseudonymizer:
    """Replaces user ids by pseudonyms and drops opted-out users' events (exporter side).

    Give it a :class:`PrivacyStore` or the path of one. Results are cached in memory; the
    cache is dropped whenever the store changes (another process opted a user out or
    forgot one), so an opt-out takes effect at the next batch.

    >>> from edgemetrics.events import View
    >>> p = Pseudonymizer(PrivacyStore())
    >>> kept, dropped = p.apply([View(content_id="v1", user_id="u-7"), View(content_id="v2")])
    >>> kept[0].user_id.startswith("k1-"), kept[1].user_id, dropped
    (True, None, 0)
    """

    def __init__(
        self,
        store: PrivacyStore | str | Path | None = None,
        *,
        maintain_every_s: float = 3600.0,
    ) -> None:
        self.store = store if isinstance(store, PrivacyStore) else PrivacyStore(store)
        self._owns_store = not isinstance(store, PrivacyStore)
        self.maintain_every_s = maintain_every_s
        self._cache: dict[str, str | None] = {}
        self._version: tuple[int, int] = (-1, -1)
        self._next_maintenance = 0.0
        self._lock = threading.Lock()

    def pseudonym(self, user_id: str) -> str | None:
        """The pseudonym for ``user_id``, or None when that user opted out."""
        with self._lock:
            self._refresh()
            return self._lookup(user_id)

    def _lookup(self, user_id: str) -> str | None:
        cache = self._cache
        if user_id in cache:
            return cache[user_id]
        value = self.store.pseudonym(user_id)
        if len(cache) >= 100_000:
            cache.clear()
        cache[user_id] = value
        return value

    def _refresh(self) -> None:
        now = time.monotonic()
        if now >= self._next_maintenance:
            self._next_maintenance = now + self.maintain_every_s
            self.store.maintain()
            self._cache.clear()
        version = self.store.data_version()
        if version != self._version:
            self._version = version
            self._cache.clear()

    def apply(self, events: Sequence[Event]) -> tuple[list[Event], int]:
        """Pseudonymise each event's ``user_id``; drop opted-out users' events.

        Returns the events to export and how many were dropped.
        """
        kept: list[Event] = []
        dropped = 0
        with self._lock:
            # Once per batch: a change made elsewhere applies from the next batch on.
            self._refresh()
            pseudonyms = {
                user_id: self._lookup(user_id)
                for user_id in {getattr(e, "user_id", None) for e in events}
                if user_id is not None
            }
        for event in events:
            user_id = getattr(event, "user_id", None)
            if user_id is None:
                kept.append(event)
                continue
            pseudonym = pseudonyms[user_id]
            if pseudonym is None:
                dropped += 1
                continue
            # model_copy skips validation: the pseudonym is a valid id by construction.
            kept.append(event.model_copy(update={"user_id": pseudonym}))
        return kept, dropped

    def reset_after_fork(self) -> None:
        """In a forked child: fresh lock and cache, the store reopened."""
        self._lock = threading.Lock()
        self._cache = {}
        self._version = (-1, -1)
        self.store.reopen_after_fork()

    def close(self) -> None:
        """Close the store if this object opened it."""
        if self._owns_store:
            self.store.close()


def drop_opted_out_columns(columns: Columns, store: PrivacyStore) -> int:
    """Drop opted-out users' rows from the collector's columnar batch, in place; returns
    how many were dropped.

    >>> from edgemetrics.columnar import Columns
    >>> from edgemetrics.events import View
    >>> from edgemetrics.layout import encode
    >>> store = PrivacyStore()
    >>> store.opt_out("u-9")
    >>> batch = Columns()
    >>> batch.add_points([encode(View(content_id="v", user_id=p))
    ...                   for p in store.opted_out_pseudonyms()])
    >>> batch.add_points([encode(View(content_id="v", user_id="u-1"))])
    >>> drop_opted_out_columns(batch, store), batch.count
    (1, 1)
    """
    opted = store.opted_out_pseudonyms()
    dropped = 0
    for dataset, rows in list(columns.tables.items()):
        position = _USER_BLOB.get(dataset)
        if position is None:
            continue
        users = rows.column(f"blob{position + 1}")
        keep = [
            i
            for i, user in enumerate(users)
            if not (user and (user in opted or store.is_opted_out(user)))
        ]
        if len(keep) == len(users):
            continue
        columns.keep(dataset, keep)
        dropped += len(users) - len(keep)
    return dropped


def _configured_store() -> PrivacyStore:
    import edgemetrics

    client = edgemetrics.get_client()
    if client is None:
        raise RuntimeError("edgemetrics.privacy: call edgemetrics.configure() first")
    return client.pseudonymizer.store


def opt_out(user_id: str) -> None:
    """Record ``user_id``'s objection in the configured client's key store: their events
    are dropped before export from the next batch on (e.g. from an account-settings page).

    >>> import edgemetrics
    >>> from edgemetrics.events import View
    >>> from edgemetrics.sinks import MemorySink
    >>> sink = MemorySink()
    >>> client = edgemetrics.configure(sink=sink, flush_interval=0.05)
    >>> opt_out("u-5")
    >>> edgemetrics.track(View(content_id="v1", user_id="u-5"))
    >>> edgemetrics.flush(), sink.events, client.counters.dropped_opted_out
    (True, [], 1)
    >>> opt_in("u-5")
    >>> edgemetrics.shutdown()
    """
    _configured_store().opt_out(user_id)


def opt_in(user_id: str) -> None:
    """Withdraw ``user_id``'s opt-out in the configured client's key store."""
    _configured_store().opt_in(user_id)
