"""The embedded store: DuckDB tables in AE's shape, one per dataset.

Each table has AE's columns (``timestamp``, ``index1``, ``blob1..20``, ``double1..20``,
``_sample_interval``) plus ``event_id``, so a replayed event is stored once. Unset blobs
are ``''`` and unset doubles ``0``, as AE returns them, so one SQL text reads both.

An event's id and timestamp never change across retries (the exporter sets both when the
event is made), so a write leaves out every row whose event id is already stored *at a
time inside the batch's own time range*: a range check that DuckDB answers from the few
row groups whose zone maps overlap that range, however large the table grows. A row
later than the newest stored row cannot be a replay and is not looked up at all. No index
is kept: a unique index costs more per insert than the insert itself and grows in memory
with the table (tens of bytes per row; gigabytes at 100M rows).

One process owns a store file for writing (DuckDB's rule); others reach it over HTTP.

>>> import tempfile, os
>>> from edgemetrics.events import View
>>> from edgemetrics.layout import encode
>>> store = EmbeddedStore(os.path.join(tempfile.mkdtemp(), "em.duckdb"))
>>> point = encode(View(content_id="v1", creator_id="c1"))
>>> store.write([point]), store.write([point])
(1, 0)
>>> store.query("SELECT count(*) AS n FROM edgemetrics_content")[0]["n"]
1
>>> store.close()
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgemetrics.events import FAMILIES
from edgemetrics.layout import MAX_BLOBS, MAX_DOUBLES, DataPoint, dataset_name

if TYPE_CHECKING:
    from edgemetrics.retention import Retention

log = logging.getLogger("edgemetrics")

DATASETS: tuple[str, ...] = tuple(dataset_name(f) for f in FAMILIES)

_BLOB_COLUMNS = [f"blob{i}" for i in range(1, MAX_BLOBS + 1)]
_DOUBLE_COLUMNS = [f"double{i}" for i in range(1, MAX_DOUBLES + 1)]

# The columns a write takes, in table order; ``timestamp`` as epoch milliseconds (UTC).
_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("timestamp", pa.timestamp("ms")),
        ("index1", pa.string()),
        *[(name, pa.string()) for name in _BLOB_COLUMNS],
        *[(name, pa.float64()) for name in _DOUBLE_COLUMNS],
        ("_sample_interval", pa.uint32()),
    ]
)
_SQL_TYPES = {
    pa.string(): "VARCHAR",
    pa.timestamp("ms"): "TIMESTAMP",
    pa.float64(): "DOUBLE",
    pa.uint32(): "UINTEGER",
}
COLUMNS: tuple[str, ...] = tuple(_SCHEMA.names)

# Rows of one batch further apart in time than this are checked for replays as separate
# ranges, so one old straggler does not widen the range to everything in between.
_RANGE_GAP_MS = 60_000
_MAX_RANGES = 16


def _ddl(table: str) -> str:
    blobs = ", ".join(f"{c} VARCHAR NOT NULL DEFAULT ''" for c in _BLOB_COLUMNS)
    doubles = ", ".join(f"{c} DOUBLE NOT NULL DEFAULT 0" for c in _DOUBLE_COLUMNS)
    return (
        f"CREATE TABLE IF NOT EXISTS {table} ("
        "event_id VARCHAR NOT NULL, timestamp TIMESTAMP NOT NULL, index1 VARCHAR NOT NULL, "
        f"{blobs}, {doubles}, _sample_interval UINTEGER NOT NULL DEFAULT 1)"
    )


# DuckDB's WAL size past which a commit checkpoints (see EmbeddedStore.__init__).
CHECKPOINT_THRESHOLD = "256MB"


@dataclass(frozen=True, slots=True)
class Const:
    """A column holding one value in every row of a write (most blobs and doubles of a
    batch: unused slots, defaults, the layout version), passed to DuckDB once."""

    value: Any


@dataclass(frozen=True, slots=True)
class HexIds:
    """A column of event ids, 32 hex digits each, joined into one string: one object for a
    whole batch where a list holds one string per row (the collector checks ids this way,
    and Arrow takes the string as the array's data as it is)."""

    joined: str

    def split(self) -> list[str]:
        """The ids one by one.

        >>> HexIds("a" * 32 + "b" * 32).split() == ["a" * 32, "b" * 32]
        True
        """
        j = self.joined
        return [j[i : i + 32] for i in range(0, len(j), 32)]


Column = Sequence[Any] | Const | HexIds


class EmbeddedStore:
    """A DuckDB file holding every dataset; thread-safe for one owning process."""

    def __init__(
        self, path: str | Path, *, read_only: bool = False, retention: Retention | None = None
    ) -> None:
        self.path = Path(path)
        # Deletes expired rows on a schedule and after writes (edgemetrics.retention);
        # None keeps everything.
        self.retention = retention
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(str(self.path), read_only=read_only)
        self._con.execute("SET TimeZone = 'UTC'").fetchall()
        # Re-entrant: a maintenance job (retention) holds it across several statements.
        self._write_lock = threading.RLock()
        self._cursor_lock = threading.Lock()
        self._local = threading.local()
        # The latest stored timestamp (epoch ms) per table: a batch entirely later than
        # it cannot hold a replay, so its check is skipped. Deletes only make it an
        # over-estimate, which is safe.
        self._latest: dict[str, int] = {}
        # Per table, the columns whose DEFAULT is the value AE gives an unset slot ('', 0,
        # and 1 for _sample_interval), as this store's DDL declares them: a write leaves
        # out a constant column holding that value (see write_columns).
        self._defaults: dict[str, dict[str, Any]] = {}
        if not read_only:
            # DuckDB checkpoints after a commit once its WAL passes 16 MB (the default):
            # under a steady stream of inserts that is every few inserts, each rewriting
            # the tables' metadata. At 256 MB inserts cost about a tenth less CPU
            # (measured on the collector's row-group inserts); a crash replays at most
            # that much WAL at the next open, and close() still checkpoints.
            self._con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'").fetchall()
            for table in DATASETS:
                self._con.execute(_ddl(table)).fetchall()
            self._drop_unique_indexes()
            for table in DATASETS:
                # fetchall, not fetchone: a result left pending keeps its transaction open,
                # and DuckDB then refuses every checkpoint (the WAL only grows).
                rows = self._con.execute(f"SELECT epoch_ms(max(timestamp)) FROM {table}").fetchall()
                row = rows[0] if rows else None
                self._latest[table] = int(row[0]) if row and row[0] is not None else -(1 << 62)
                self._defaults[table] = self._read_defaults(table)
            if retention is not None:
                retention.start(self)

    def _read_defaults(self, table: str) -> dict[str, Any]:
        """The columns of ``table`` whose declared DEFAULT is exactly AE's unset value."""
        found = self._con.execute(
            "SELECT column_name, data_type, column_default FROM duckdb_columns() "
            "WHERE table_name = ? AND schema_name = 'main'",
            [table],
        ).fetchall()
        return {
            name: _UNSET_DEFAULTS[(sql_type, default)]
            for name, sql_type, default in found
            if (sql_type, default) in _UNSET_DEFAULTS
        }

    def _drop_unique_indexes(self) -> None:
        """Stores made before 0.1's ingest rework have ``event_id VARCHAR PRIMARY KEY``:
        rebuild those tables without it (same columns, same rows), once."""
        keyed = [
            r[0]
            for r in self._con.execute(
                "SELECT table_name FROM duckdb_constraints() "
                "WHERE constraint_type = 'PRIMARY KEY' AND table_name IN "
                f"({', '.join('?' for _ in DATASETS)})",
                list(DATASETS),
            ).fetchall()
        ]
        for table in keyed:
            log.warning("edgemetrics store: rebuilding %s without its unique index", table)
            con = self._con
            con.execute("BEGIN TRANSACTION").fetchall()
            try:
                con.execute(_ddl(f"{table}__rebuild")).fetchall()
                con.execute(f"INSERT INTO {table}__rebuild SELECT * FROM {table}").fetchall()
                con.execute(f"DROP TABLE {table}").fetchall()
                con.execute(f"ALTER TABLE {table}__rebuild RENAME TO {table}").fetchall()
                con.execute("COMMIT").fetchall()
            except Exception:
                con.execute("ROLLBACK").fetchall()
                raise
        if keyed:
            self._con.execute("CHECKPOINT").fetchall()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        # A DuckDB connection is not safe across threads; each thread gets its own cursor.
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            # Making a cursor is a call on the shared connection, which DuckDB refuses
            # (rather than waits) while another thread makes one.
            with self._cursor_lock:
                cur = self._con.cursor()
            cur.execute("SET TimeZone = 'UTC'").fetchall()
            self._local.cursor = cur
        return cur

    def write(self, points: Iterable[DataPoint]) -> int:
        """Insert data points, one statement per dataset; returns how many were new.

        An event id given twice is stored once (the last one wins); one already stored
        at a time within the points' time range is left alone.
        """
        by_dataset: dict[str, list[DataPoint]] = {}
        for point in points:
            by_dataset.setdefault(point.dataset, []).append(point)
        inserted = 0
        for dataset, rows in by_dataset.items():
            columns: dict[str, Column] = {
                "event_id": [p.event_id for p in rows],
                "timestamp": [round(p.timestamp.timestamp() * 1000) for p in rows],
                "index1": [p.index1 for p in rows],
                "_sample_interval": [p.sample_interval for p in rows],
            }
            for i, name in enumerate(_BLOB_COLUMNS):
                columns[name] = [p.blobs[i] if i < len(p.blobs) else "" for p in rows]
            for i, name in enumerate(_DOUBLE_COLUMNS):
                columns[name] = [p.doubles[i] if i < len(p.doubles) else 0.0 for p in rows]
            inserted += self.write_columns(dataset, columns, len(rows), enforce=False)
        if self.retention is not None and by_dataset:
            self.retention.maybe_enforce(self)
        return inserted

    def write_columns(
        self, dataset: str, columns: Mapping[str, Column], rows: int, *, enforce: bool = True
    ) -> int:
        """Insert ``rows`` rows given column by column (every name in :data:`COLUMNS`;
        ``timestamp`` as epoch milliseconds); returns how many were new.

        A :class:`Const` column gives every row the same value. Replays are left out as
        :meth:`write` says. One statement, so the rows land together or not at all.

        >>> import tempfile, os
        >>> store = EmbeddedStore(os.path.join(tempfile.mkdtemp(), "em.duckdb"))
        >>> cols = {name: Const(0.0 if name.startswith("double") else "") for name in COLUMNS}
        >>> cols.update(event_id=["a" * 32, "b" * 32], timestamp=Const(1_700_000_000_000),
        ...             _sample_interval=Const(1))
        >>> [store.write_columns("edgemetrics_content", cols, 2) for _ in "twice"[:2]]
        [2, 0]
        >>> store.close()
        """
        if dataset not in DATASETS:
            raise ValueError(f"dataset: unknown dataset {dataset!r}")
        if rows == 0:
            return 0
        arrays: list[pa.Array] = []
        names: list[str] = []
        targets: list[str] = []
        select: list[str] = []
        params: list[Any] = []
        defaults = self._defaults.get(dataset, {})
        for field in _SCHEMA:
            column = columns[field.name]
            if isinstance(column, Const) and _is_default(column.value, field.name, defaults):
                # Left to the column's DEFAULT (the same value): DuckDB fills a column it
                # is not given for about a quarter less CPU per row than a constant it is
                # given (most of the 43 columns of a row are unset slots).
                continue
            targets.append(field.name)
            if isinstance(column, Const) and field.name not in ("event_id", "timestamp"):
                sql_type = _SQL_TYPES[field.type]
                select.append(f"CAST(? AS {sql_type})")
                params.append(column.value)
                continue
            if isinstance(column, HexIds):
                arrays.append(_hex_ids_array(column, rows))
                names.append(field.name)
                select.append(field.name)
                continue
            if isinstance(column, Const):
                column = [column.value] * rows
            elif len(column) != rows:
                raise ValueError(f"{field.name}: {len(column)} values for {rows} rows")
            if field.name == "timestamp":
                # Epoch ms as int64, read as timestamps: a third cheaper than converting
                # the ints to a timestamp type.
                arrays.append(pa.array(column, type=pa.int64()).view(field.type))
            else:
                arrays.append(pa.array(column, type=field.type))
            names.append(field.name)
            select.append(field.name)
        batch = pa.Table.from_arrays(arrays, names=names)
        with self._write_lock:
            batch = self._without_replays(dataset, batch)
            if batch.num_rows == 0:
                return 0
            cur = self._cursor()
            cur.register("_em_batch", batch)
            try:
                result = cur.execute(
                    f"INSERT INTO {dataset} ({', '.join(targets)}) "
                    f"SELECT {', '.join(select)} FROM _em_batch",
                    params,
                ).fetchall()
            finally:
                cur.unregister("_em_batch")
            stamps = batch.column("timestamp")
            latest = pc.max(stamps).cast(pa.int64()).as_py()
            self._latest[dataset] = max(self._latest[dataset], int(latest))
        if enforce and self.retention is not None:
            self.retention.maybe_enforce(self)
        return int(result[0][0]) if result else 0

    def _without_replays(self, dataset: str, batch: pa.Table) -> pa.Table:
        """The batch less repeated event ids (the last one stays) and less events already
        stored at a time within the batch's time ranges.

        Only rows no newer than the newest stored row are looked up: a replay carries the
        time its event was first sent with, so a row later than everything stored cannot
        be one (and in steady traffic that is nearly every row). Those few are matched
        against the stored ids in their time ranges, which DuckDB reads from the row
        groups whose zone maps overlap them; repeats within the batch are found by one
        Arrow hash table (``unique``)."""
        rows = batch.num_rows
        ids = batch.column("event_id")
        stamps = batch.column("timestamp").cast(pa.int64())
        latest = self._latest[dataset]
        old = pc.less_equal(stamps, latest)
        old_rows = int(pc.sum(old).as_py() or 0)
        stored: set[str] = set()
        if old_rows:
            candidates = batch.filter(old) if old_rows < rows else batch
            ranges = _time_ranges(candidates.column("timestamp"), latest)
            stored_sql = " UNION ALL ".join(
                f"SELECT event_id FROM {dataset} "
                "WHERE timestamp BETWEEN make_timestamp_ms(?) AND make_timestamp_ms(?)"
                for _ in ranges
            )
            cur = self._cursor()
            cur.register("_em_ids", candidates.select(["event_id"]))
            try:
                found = cur.execute(
                    f"SELECT DISTINCT event_id FROM _em_ids WHERE event_id IN ({stored_sql})",
                    [bound for pair in ranges for bound in pair],
                ).fetchall()
            finally:
                cur.unregister("_em_ids")
            stored = {event_id for (event_id,) in found}
        repeated = len(pc.unique(ids)) < rows
        if not stored and not repeated:
            return batch
        keep: list[int] = []
        last: dict[str, int] = {}
        for i, event_id in enumerate(ids.to_pylist()):
            if event_id in stored:
                continue
            if repeated:
                last[event_id] = i  # the last row of an id wins
            else:
                keep.append(i)
        if repeated:
            keep = sorted(last.values())
        return batch.take(pa.array(keep, type=pa.int64()))

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Run SQL and return rows as dicts."""
        cur = self._cursor()
        result = cur.execute(sql, params or [])
        names = [d[0] for d in result.description or []]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        with self._write_lock:
            self._cursor().execute(sql, params or []).fetchall()

    @property
    def write_lock(self) -> threading.RLock:
        """Held, no write lands: for work that must see a still table across statements
        (retention exports rows, then deletes exactly those)."""
        return self._write_lock

    def close(self) -> None:
        if self.retention is not None:
            self.retention.stop()
        with self._write_lock:
            self._con.close()


# (type, DEFAULT as duckdb_columns() shows it) -> the value, for the defaults _ddl declares.
_UNSET_DEFAULTS: dict[tuple[str, str], Any] = {
    ("VARCHAR", "''"): "",
    ("DOUBLE", "0"): 0.0,
    ("UINTEGER", "1"): 1,
}


def _is_default(value: Any, name: str, defaults: Mapping[str, Any]) -> bool:
    """True when ``value`` is exactly column ``name``'s default: same type and value, and
    for a double not -0.0 (which the default 0 would store as 0.0).

    >>> defaults = {"blob1": "", "double1": 0.0, "_sample_interval": 1}
    >>> [_is_default(v, n, defaults) for v, n in [("", "blob1"), (-0.0, "double1"),
    ...  (0.0, "double1"), (True, "_sample_interval"), (1, "_sample_interval"), ("", "x")]]
    [True, False, True, False, True, False]
    """
    if name not in defaults:
        return False
    default = defaults[name]
    if type(value) is not type(default) or value != default:
        return False
    return type(value) is not float or math.copysign(1.0, value) > 0


def _hex_ids_array(ids: HexIds, rows: int) -> pa.Array:
    data = ids.joined.encode("ascii")
    if len(data) != 32 * rows:
        raise ValueError(f"event_id: {len(data) // 32} ids for {rows} rows")
    offsets = np.arange(0, len(data) + 1, 32, dtype=np.int32)
    return pa.StringArray.from_buffers(rows, pa.py_buffer(offsets), pa.py_buffer(data))


def _time_ranges(stamps: pa.ChunkedArray, latest_ms: int) -> list[tuple[int, int]]:
    """Epoch-ms ranges covering the batch's timestamps up to ``latest_ms`` (nothing later
    is stored), split where consecutive times are more than a minute apart.

    >>> _time_ranges(pa.chunked_array([pa.array([5, 1, 200_000, 3], pa.timestamp("ms"))]), 10**9)
    [(1, 5), (200000, 200000)]
    >>> _time_ranges(pa.chunked_array([pa.array([5, 1], pa.timestamp("ms"))]), 0)
    []
    """
    values = stamps.cast(pa.int64()).to_numpy()
    low, high = int(values.min()), int(values.max())
    if low > latest_ms:
        return []
    if high - low <= _RANGE_GAP_MS:  # the usual case: a batch of the last second or so
        return [(low, min(high, latest_ms))]
    values = np.unique(values[values <= latest_ms])
    breaks = np.flatnonzero(np.diff(values) > _RANGE_GAP_MS)
    if breaks.size >= _MAX_RANGES:
        # Keep the widest gaps apart; the rest merge into their neighbours.
        widest = np.argsort(np.diff(values)[breaks])[-(_MAX_RANGES - 1) :]
        breaks = np.sort(breaks[widest])
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [values.size - 1]))
    return [(int(values[s]), int(values[e])) for s, e in zip(starts, ends, strict=True)]
