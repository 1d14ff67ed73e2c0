"""The embedded store: DuckDB tables in AE's shape, one per dataset.

Each table has AE's columns (``timestamp``, ``index1``, ``blob1..20``, ``double1..20``,
``_sample_interval``) plus ``event_id``, unique, so a replayed event is stored once. Unset
blobs are ``''`` and unset doubles ``0``, as AE returns them, so one SQL text reads both.

One process owns a store file for writing (DuckDB's rule); others reach it over HTTP.

>>> import tempfile, os
>>> from edgemetrics.events import View
>>> from edgemetrics.layout import encode
>>> store = EmbeddedStore(os.path.join(tempfile.mkdtemp(), "em.duckdb"))
>>> store.write([encode(View(content_id="v1", creator_id="c1"))])
1
>>> store.query("SELECT count(*) AS n FROM edgemetrics_content")[0]["n"]
1
>>> store.close()
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from edgemetrics.events import FAMILIES
from edgemetrics.layout import MAX_BLOBS, MAX_DOUBLES, DataPoint, dataset_name

if TYPE_CHECKING:
    from edgemetrics.retention import Retention

DATASETS: tuple[str, ...] = tuple(dataset_name(f) for f in FAMILIES)

_BLOB_COLUMNS = [f"blob{i}" for i in range(1, MAX_BLOBS + 1)]
_DOUBLE_COLUMNS = [f"double{i}" for i in range(1, MAX_DOUBLES + 1)]

_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("index1", pa.string()),
        *[(name, pa.string()) for name in _BLOB_COLUMNS],
        *[(name, pa.float64()) for name in _DOUBLE_COLUMNS],
        ("_sample_interval", pa.uint32()),
    ]
)


def _ddl(table: str) -> str:
    blobs = ", ".join(f"{c} VARCHAR NOT NULL DEFAULT ''" for c in _BLOB_COLUMNS)
    doubles = ", ".join(f"{c} DOUBLE NOT NULL DEFAULT 0" for c in _DOUBLE_COLUMNS)
    return (
        f"CREATE TABLE IF NOT EXISTS {table} ("
        "event_id VARCHAR PRIMARY KEY, timestamp TIMESTAMP NOT NULL, index1 VARCHAR NOT NULL, "
        f"{blobs}, {doubles}, _sample_interval UINTEGER NOT NULL DEFAULT 1)"
    )


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
        if not read_only:
            for table in DATASETS:
                self._con.execute(_ddl(table)).fetchall()
            if retention is not None:
                retention.start(self)

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
        """Insert data points in one transaction per dataset; returns how many were new."""
        by_dataset: dict[str, dict[str, DataPoint]] = {}
        for point in points:
            by_dataset.setdefault(point.dataset, {})[point.event_id] = point
        inserted = 0
        with self._write_lock:
            cur = self._cursor()
            for dataset, unique in by_dataset.items():
                if dataset not in DATASETS:
                    raise ValueError(f"dataset: unknown dataset {dataset!r}")
                batch = _to_arrow(list(unique.values()))
                cur.register("_em_batch", batch)
                try:
                    result = cur.execute(
                        f"INSERT OR IGNORE INTO {dataset} "
                        "SELECT event_id, timestamp::TIMESTAMP, index1, "
                        f"{', '.join(_BLOB_COLUMNS)}, {', '.join(_DOUBLE_COLUMNS)}, "
                        "_sample_interval FROM _em_batch"
                    ).fetchall()
                finally:
                    cur.unregister("_em_batch")
                inserted += int(result[0][0]) if result else 0
        if self.retention is not None:
            self.retention.maybe_enforce(self)
        return inserted

    def write_columns(self, dataset: str, columns: dict[str, list[Any]]) -> int:
        """Insert AE-shaped columns (``timestamp`` as epoch milliseconds) in one statement.

        The collector's fast path builds these without any per-event objects. An event id
        seen twice in one call is stored once (the last one wins, as in :meth:`write`);
        one already stored is left alone. Returns how many rows were new.
        """
        if not columns["event_id"]:
            return 0
        return self.write_arrow(dataset, columns_to_arrow(columns))

    def write_arrow(self, dataset: str, batch: pa.Table) -> int:
        """Insert an Arrow table in the store's column schema; see :meth:`write_columns`."""
        if dataset not in DATASETS:
            raise ValueError(f"dataset: unknown dataset {dataset!r}")
        if batch.num_rows == 0:
            return 0
        ids = batch.column("event_id").to_pylist()
        if len(set(ids)) != len(ids):
            last = {event_id: i for i, event_id in enumerate(ids)}
            batch = batch.take(pa.array(sorted(last.values()), type=pa.int64()))
        with self._write_lock:
            cur = self._cursor()
            cur.register("_em_batch", batch)
            select = (
                "SELECT event_id, timestamp::TIMESTAMP, index1, "
                f"{', '.join(_BLOB_COLUMNS)}, {', '.join(_DOUBLE_COLUMNS)}, "
                "_sample_interval FROM _em_batch"
            )
            try:
                # Replays are rare: a plain insert is about twice as fast as OR IGNORE, and
                # a duplicate makes it fail as a whole, so then the ignoring insert runs.
                try:
                    result = cur.execute(f"INSERT INTO {dataset} {select}").fetchall()
                except duckdb.ConstraintException:
                    result = cur.execute(f"INSERT OR IGNORE INTO {dataset} {select}").fetchall()
            finally:
                cur.unregister("_em_batch")
        return int(result[0][0]) if result else 0

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


def columns_to_arrow(columns: dict[str, list[Any]]) -> pa.Table:
    """An Arrow table in the store's schema; a column holding one value throughout (most
    blobs and doubles of a type: unused slots, defaults) is built without a per-row loop.

    >>> columns_to_arrow({"event_id": ["a"], "timestamp": [0], "index1": [""],
    ...     "_sample_interval": [1], **{c: [""] for c in _BLOB_COLUMNS},
    ...     **{c: [0.0] for c in _DOUBLE_COLUMNS}}).num_rows
    1
    """
    arrays = []
    for schema_field in _SCHEMA:
        values = columns[schema_field.name]
        n = len(values)
        if n > 1 and values.count(values[0]) == n:
            arrays.append(pa.repeat(pa.scalar(values[0], type=schema_field.type), n))
        else:
            arrays.append(pa.array(values, type=schema_field.type))
    return pa.Table.from_arrays(arrays, schema=_SCHEMA)


def _to_arrow(points: Sequence[DataPoint]) -> pa.Table:
    columns: dict[str, list[Any]] = {
        "event_id": [p.event_id for p in points],
        "timestamp": [p.timestamp for p in points],
        "index1": [p.index1 for p in points],
        "_sample_interval": [p.sample_interval for p in points],
    }
    for i, name in enumerate(_BLOB_COLUMNS):
        columns[name] = [p.blobs[i] if i < len(p.blobs) else "" for p in points]
    for i, name in enumerate(_DOUBLE_COLUMNS):
        columns[name] = [p.doubles[i] if i < len(p.doubles) else 0.0 for p in points]
    return pa.Table.from_pydict(columns, schema=_SCHEMA)
