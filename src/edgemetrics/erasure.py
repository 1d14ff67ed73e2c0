"""Erasure on request (GDPR art. 17): remove one user's events everywhere we can, then
crypto-shred the user so what we cannot delete (Analytics Engine rows) is unlinkable.

A user's events carry their pseudonym (one per live master key, see
:mod:`edgemetrics.privacy`), or the raw id when a sender had no pseudonymizer. Every place
is searched for all of them:

* the embedded store's raw tables (rows deleted; then the DuckDB file is rewritten, since
  DuckDB keeps deleted rows' bytes in its blocks until they are reused);
* the disk spool (each waiting batch is opened, the user's events taken out, the batch
  written back under its own batch id, freed pages zeroed);
* rollup tables, when they keep a ``user_id`` column (aggregates without one hold nothing
  that identifies anyone and are reported as such);
* Analytics Engine cannot delete rows: the user's secret is destroyed
  (:meth:`~edgemetrics.privacy.PrivacyStore.forget`), so its pseudonyms can no longer be
  linked to anyone; AE drops the rows itself after 90 days.

>>> import os, tempfile
>>> from edgemetrics.events import View
>>> from edgemetrics.layout import encode
>>> from edgemetrics.privacy import PrivacyStore
>>> from edgemetrics.store import EmbeddedStore
>>> keys = PrivacyStore()
>>> store = EmbeddedStore(os.path.join(tempfile.mkdtemp(), "em.duckdb"))
>>> _ = store.write([encode(View(content_id="v1", user_id=keys.pseudonym("u-1"))),
...                  encode(View(content_id="v1", user_id=keys.pseudonym("u-2")))])
>>> report = erase_user("u-1", keys=keys, store=store)
>>> report.removed["store:edgemetrics_content"], report.shredded
(1, True)
>>> store.close()
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from edgemetrics.layout import columns, dataset_name
from edgemetrics.wire import decode_body, gzip_body

if TYPE_CHECKING:
    from edgemetrics.privacy import PrivacyStore
    from edgemetrics.store import EmbeddedStore

log = logging.getLogger("edgemetrics")

# The families whose events carry a user id.
USER_FAMILIES: tuple[str, ...] = ("content", "commerce", "platform")
ROLLUP_PREFIX = "edgemetrics_rollup"


@dataclass
class ErasureReport:
    """What was removed where (event counts per place) and what else was done."""

    removed: dict[str, int] = field(default_factory=dict)
    shredded: bool = False
    pseudonyms: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Events removed across every place."""
        return sum(self.removed.values())

    def lines(self) -> list[str]:
        """The report as printed by ``edgemetrics privacy delete``."""
        out = [f"searched for {self.pseudonyms} pseudonym(s) and the raw id"]
        out += [f"  {place}: {n} event(s) removed" for place, n in sorted(self.removed.items())]
        out.append(
            "  key store: user secret destroyed (their pseudonyms in Analytics Engine are "
            "now unlinkable)"
            if self.shredded
            else "  key store: no secret on file for this user (nothing to shred)"
        )
        out += [f"  note: {note}" for note in self.notes]
        return out


def _placeholders(n: int) -> str:
    return ", ".join("?" for _ in range(n))


def erase_from_store(store: EmbeddedStore, user_ids: Collection[str]) -> dict[str, int]:
    """Delete rows whose user id is one of ``user_ids`` from the raw tables."""
    ids = sorted(user_ids)
    removed: dict[str, int] = {}
    for family in USER_FAMILIES:
        table = dataset_name(family)
        column = columns(family)["user_id"]
        where = f"{column} IN ({_placeholders(len(ids))})"
        count = store.query(f"SELECT count(*) AS n FROM {table} WHERE {where}", ids)[0]["n"]
        if count:
            store.execute(f"DELETE FROM {table} WHERE {where}", ids)
        removed[f"store:{table}"] = int(count)
    return removed


def rollup_tables(store: EmbeddedStore) -> list[str]:
    """Tables holding rollups (named ``edgemetrics_rollup*``)."""
    rows = store.query(
        "SELECT table_name FROM information_schema.tables WHERE table_name LIKE ? "
        "ORDER BY table_name",
        [ROLLUP_PREFIX + "%"],
    )
    return [r["table_name"] for r in rows]


def _table_columns(store: EmbeddedStore, table: str) -> dict[str, str]:
    rows = store.query(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?",
        [table],
    )
    return {r["column_name"]: r["data_type"] for r in rows}


def erase_from_rollups(
    store: EmbeddedStore, user_ids: Collection[str], notes: list[str]
) -> dict[str, int]:
    """Delete rollup rows keyed by one of ``user_ids``; aggregates without a user column
    are left (they identify nobody) and noted."""
    ids = sorted(user_ids)
    removed: dict[str, int] = {}
    for table in rollup_tables(store):
        if "user_id" not in _table_columns(store, table):
            notes.append(f"rollups {table}: aggregated without user ids, nothing identifies them")
            continue
        where = f"user_id IN ({_placeholders(len(ids))})"
        count = store.query(f"SELECT count(*) AS n FROM {table} WHERE {where}", ids)[0]["n"]
        if count:
            store.execute(f"DELETE FROM {table} WHERE {where}", ids)
        removed[f"rollups:{table}"] = int(count)
    return removed


def compact_store(path: str | Path) -> None:
    """Rewrite a DuckDB file so deleted rows' bytes are gone from it.

    DuckDB marks deleted rows and reuses their blocks later, so the bytes stay in the file
    until then. Copying the live rows into a fresh file and swapping it in removes them.
    The store must be closed (DuckDB lets one process open a file for writing).
    """
    import duckdb

    path = Path(path)
    fresh = path.with_name(path.name + ".compact")
    for leftover in (fresh, Path(str(fresh) + ".wal")):
        leftover.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    try:
        name = con.execute("SELECT current_database()").fetchone()
        assert name is not None
        con.execute(f"ATTACH '{_sql_text(str(fresh))}' AS em_compact")
        con.execute(f'COPY FROM DATABASE "{name[0]}" TO em_compact')
        con.execute("DETACH em_compact")
    finally:
        con.close()
    os.replace(fresh, path)
    Path(str(path) + ".wal").unlink(missing_ok=True)


def _sql_text(value: str) -> str:
    return value.replace("'", "''")


def erase_from_spool(directory: str | Path, user_ids: Collection[str]) -> tuple[int, int]:
    """Take the user's events out of every batch waiting in a spool directory.

    Returns (events removed, batches that were being sent at that moment). A batch left
    empty is deleted; the others are written back with their own batch id, so delivery
    stays at-least-once with duplicates still recognised.
    """
    from edgemetrics.spool import FILENAME

    path = Path(directory) / FILENAME
    if not path.exists():
        return 0, 0
    wanted = frozenset(user_ids)
    con = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    removed = 0
    leased = 0
    try:
        con.execute("PRAGMA busy_timeout = 30000")
        # Pages freed by this connection are zeroed, so the old bodies leave the file.
        con.execute("PRAGMA secure_delete = ON")
        con.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            rows = con.execute("SELECT id, body, lease_until FROM batches ORDER BY id").fetchall()
            freed = 0
            for row_id, body, lease_until in rows:
                removed_here, new_body, left = _filter_body(bytes(body), wanted)
                if not removed_here:
                    continue
                removed += removed_here
                if lease_until >= now:
                    leased += 1
                if left == 0:
                    con.execute("DELETE FROM batches WHERE id = ?", (row_id,))
                    freed += len(body)
                else:
                    con.execute(
                        "UPDATE batches SET body = ?, events = ?, bytes = ? WHERE id = ?",
                        (new_body, left, len(new_body), row_id),
                    )
                    freed += len(body) - len(new_body)
            if freed:
                con.execute("UPDATE meta SET value = value - ? WHERE key = 'bytes'", (freed,))
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return removed, leased


def _filter_body(body: bytes, wanted: frozenset[str]) -> tuple[int, bytes, int]:
    batch_id, events = decode_body(body, gzipped=True)
    kept: list[Any] = [
        e for e in events if not (isinstance(e, dict) and e.get("user_id") in wanted)
    ]
    removed = len(events) - len(kept)
    if not removed:
        return 0, body, len(events)
    new_body = gzip_body(orjson.dumps({"batch_id": batch_id, "events": kept}))
    return removed, new_body, len(kept)


def erase_user(
    user_id: str,
    *,
    keys: PrivacyStore | None,
    store: EmbeddedStore | None = None,
    spool: str | Path | None = None,
) -> ErasureReport:
    """Remove ``user_id``'s events from the store, the spool and the rollups, then shred.

    The store stays open; once its owner closes it, :func:`compact_store` removes the
    deleted rows' bytes from the file (``edgemetrics privacy delete`` does both).
    """
    report = ErasureReport()
    ids: set[str] = {user_id}
    if keys is not None:
        ids.update(keys.pseudonyms(user_id).values())
    report.pseudonyms = len(ids) - 1
    # The spool first: a batch delivered from it later would bring rows back to the store.
    if spool is not None:
        removed, leased = erase_from_spool(spool, ids)
        report.removed["spool"] = removed
        if leased:
            report.notes.append(
                f"{leased} spooled batch(es) with this user's events were being sent; run "
                "the deletion again once the sender is done"
            )
    if store is not None:
        report.removed.update(erase_from_store(store, ids))
        report.removed.update(erase_from_rollups(store, ids, report.notes))
    if keys is not None:
        report.shredded = bool(keys.forget(user_id))
    else:
        report.notes.append("no key store given: nothing was shredded")
    log.info(
        "edgemetrics: erasure request served: %d events removed, secret destroyed: %s",
        report.total,
        report.shredded,
    )
    return report
