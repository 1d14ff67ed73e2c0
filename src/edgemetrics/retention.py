"""Retention and maintenance of the embedded store: raw events 90 days, rollups two years,
derived tables kept up to date, and CSV export before data expires.

Analytics Engine keeps raw rows 90 days and deletes them itself; the embedded store does
the same through :class:`Retention`: the owning process passes one to
``EmbeddedStore(..., retention=...)``, which enforces it on a schedule (a daemon thread,
every ``every_s`` seconds, default hourly) and after writes once the interval has passed.
Rollup tables in the store (named ``edgemetrics_rollup*``) keep two years, judged by their
first date or timestamp column; so do rollups kept elsewhere (PostgreSQL) when given as
``rollups=`` (anything with ``delete_before(date)``).

The same thread maintains the store's derived tables (:mod:`edgemetrics.query.aggregates`,
which the query engine reads wherever they hold an answer): every ``maintain_every_s``
seconds (default a minute), and at once when a query finds them stale. Raw rows expire
in the same transaction as the derived rows that came from them.

Whatever is about to expire can be written to CSV first: :func:`export_csv` (``edgemetrics
privacy export --before DATE``), or ``Retention(export_dir=...)`` which exports each batch
of expiring rows before deleting it.

>>> import os, tempfile
>>> from datetime import datetime, timedelta, UTC
>>> from edgemetrics.events import View
>>> from edgemetrics.layout import encode
>>> from edgemetrics.store import EmbeddedStore
>>> now = datetime(2026, 6, 1, tzinfo=UTC)
>>> store = EmbeddedStore(os.path.join(tempfile.mkdtemp(), "em.duckdb"))
>>> _ = store.write([encode(View(content_id="old", timestamp=now - timedelta(days=91))),
...                  encode(View(content_id="new", timestamp=now - timedelta(days=89)))])
>>> enforce_retention(store, now=now).deleted["edgemetrics_content"]
1
>>> store.close()
"""

from __future__ import annotations

import atexit
import csv
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgemetrics.events import FAMILIES
from edgemetrics.layout import columns, dataset_name

if TYPE_CHECKING:
    from edgemetrics.store import EmbeddedStore

log = logging.getLogger("edgemetrics")

RAW_DAYS = 90
ROLLUP_DAYS = 2 * 365
ROLLUP_PREFIX = "edgemetrics_rollup"


def _delete_raw(store: EmbeddedStore, family: str, cutoff: datetime, aggregates: Any) -> None:
    table = dataset_name(family)
    if aggregates is None or family not in aggregates.families:
        store.execute(f"DELETE FROM {table} WHERE timestamp < ?", [_naive(cutoff)])
        return
    # One transaction: no query sees raw rows gone while derived rows still count them.
    with aggregates.transaction():
        store.execute(f"DELETE FROM {table} WHERE timestamp < ?", [_naive(cutoff)])
        aggregates.trim(family, cutoff)


@dataclass
class RetentionReport:
    """Rows deleted and rows exported, per table."""

    cutoff_raw: datetime
    cutoff_rollups: datetime
    deleted: dict[str, int] = field(default_factory=dict)
    exported: dict[str, Path] = field(default_factory=dict)


def _utc(moment: datetime | date) -> datetime:
    if not isinstance(moment, datetime):
        return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    if moment.tzinfo is None:
        raise ValueError("now: must carry a time zone (naive datetimes are ambiguous)")
    return moment.astimezone(UTC)


def _naive(moment: datetime) -> datetime:
    # The store keeps TIMESTAMP (UTC, no zone); compare like with like.
    return moment.astimezone(UTC).replace(tzinfo=None)


def _rollup_time_columns(store: EmbeddedStore) -> dict[str, tuple[str, str]]:
    rows = store.query(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_name LIKE ? ORDER BY table_name, ordinal_position",
        [ROLLUP_PREFIX + "%"],
    )
    found: dict[str, tuple[str, str]] = {}
    for row in rows:
        kind = str(row["data_type"]).upper()
        if row["table_name"] not in found and (kind == "DATE" or kind.startswith("TIMESTAMP")):
            found[row["table_name"]] = (row["column_name"], kind)
    return found


def _select_named(family: str) -> str:
    """The raw table's columns under their field names (what a person reads in a CSV)."""
    parts = ["event_id", "timestamp"]
    for name, column in columns(family).items():
        if name in ("timestamp", "layout_version"):
            continue
        parts.append(f'{column} AS "{name}"')
    parts.append("_sample_interval")
    return ", ".join(parts)


def _write_csv(path: Path, rows: list[dict[str, Any]], header: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(header))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: v.isoformat() if isinstance(v, datetime | date) else v for k, v in row.items()}
            )


def _fresh_path(path: Path) -> Path:
    """``path``, or ``name-2.csv``, ``name-3.csv``...: an earlier export is never overwritten."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def export_csv(
    store: EmbeddedStore,
    before: datetime | date,
    out_dir: str | Path,
    *,
    rollups_before: datetime | date | None = None,
) -> dict[str, tuple[Path, int]]:
    """Write every raw row older than ``before`` (and rollup rows older than
    ``rollups_before``, when given) to one CSV per table; returns path and row count.

    Raw tables are written with field names (``content_id``, ``user_id``...), not AE's
    ``blobN`` columns. A table with nothing to export gets no file.
    """
    out = Path(out_dir)
    cutoff = _naive(_utc(before))
    stamp = cutoff.strftime("%Y%m%dT%H%M%S")
    written: dict[str, tuple[Path, int]] = {}
    for family in FAMILIES:
        table = dataset_name(family)
        rows = store.query(
            f"SELECT {_select_named(family)} FROM {table} WHERE timestamp < ? "
            "ORDER BY timestamp, event_id",
            [cutoff],
        )
        if rows:
            path = _fresh_path(out / f"{table}-before-{stamp}.csv")
            _write_csv(path, rows, rows[0].keys())
            written[table] = (path, len(rows))
    if rollups_before is not None:
        rollup_cutoff = _naive(_utc(rollups_before))
        for table, (column, kind) in _rollup_time_columns(store).items():
            value: Any = rollup_cutoff.date() if kind == "DATE" else rollup_cutoff
            rows = store.query(
                f'SELECT * FROM {table} WHERE "{column}" < ? ORDER BY "{column}"', [value]
            )
            if rows:
                path = _fresh_path(out / f"{table}-before-{rollup_cutoff.strftime('%Y%m%d')}.csv")
                _write_csv(path, rows, rows[0].keys())
                written[table] = (path, len(rows))
    return written


def enforce_retention(
    store: EmbeddedStore,
    *,
    now: datetime | None = None,
    raw_days: int = RAW_DAYS,
    rollup_days: int = ROLLUP_DAYS,
    export_dir: str | Path | None = None,
    rollups: Any = None,
    aggregates: Any = None,
) -> RetentionReport:
    """Delete raw rows older than ``raw_days`` and rollup rows older than ``rollup_days``.

    With ``export_dir``, the rows are written to CSV there first (nothing is deleted if
    the export fails). ``rollups`` is an external rollup store
    (:class:`edgemetrics.query.rollup.PostgresRollups`, ...) that loses its old days too.
    ``aggregates``: the store's derived tables
    (:class:`edgemetrics.query.aggregates.Aggregates`), trimmed with the raw rows.
    """
    moment = _utc(now or datetime.now(UTC))
    report = RetentionReport(
        cutoff_raw=moment - timedelta(days=raw_days),
        cutoff_rollups=moment - timedelta(days=rollup_days),
    )
    # No write may land between the export and the delete: a row inserted in between
    # would be deleted without having been exported.
    with store.write_lock:
        if export_dir is not None:
            exported = export_csv(
                store, report.cutoff_raw, export_dir, rollups_before=report.cutoff_rollups
            )
            report.exported = {table: path for table, (path, _) in exported.items()}
        raw_cutoff = _naive(report.cutoff_raw)
        for family in FAMILIES:
            table = dataset_name(family)
            n = store.query(f"SELECT count(*) AS n FROM {table} WHERE timestamp < ?", [raw_cutoff])[
                0
            ]["n"]
            if n:
                _delete_raw(store, family, report.cutoff_raw, aggregates)
            report.deleted[table] = int(n)
        rollup_cutoff = _naive(report.cutoff_rollups)
        for table, (column, kind) in _rollup_time_columns(store).items():
            value: Any = rollup_cutoff.date() if kind == "DATE" else rollup_cutoff
            n = store.query(f'SELECT count(*) AS n FROM {table} WHERE "{column}" < ?', [value])[0][
                "n"
            ]
            if n:
                store.execute(f'DELETE FROM {table} WHERE "{column}" < ?', [value])
            report.deleted[table] = int(n)
    if rollups is not None:
        rollups.delete_before(report.cutoff_rollups.date())
    total = sum(report.deleted.values())
    if total:
        log.info("edgemetrics: retention deleted %d expired rows", total)
    return report


class Retention:
    """Automatic retention for an embedded store: run at most every ``every_s`` seconds,
    on a schedule (:meth:`start`) and after writes (:meth:`maybe_enforce`).

    ``clock`` returns the current UTC time (tests pass a controlled one).

    ``aggregates``: maintain the store's derived tables
    (:data:`~edgemetrics.query.aggregates.DEFAULT_SPECS`, or the specs given) on the same
    thread, every ``maintain_every_s`` seconds and whenever a query finds them stale;
    they are in :attr:`aggregates` once :meth:`start` ran (the engine reads them through
    ``EmbeddedBackend(store)``). False: raw rows only.

    >>> from datetime import datetime, UTC
    >>> policy = Retention(clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    >>> policy.raw_days, policy.rollup_days, policy.maintain_every_s
    (90, 730, 60.0)
    """

    def __init__(
        self,
        *,
        raw_days: int = RAW_DAYS,
        rollup_days: int = ROLLUP_DAYS,
        every_s: float = 3600.0,
        export_dir: str | Path | None = None,
        rollups: Any = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        aggregates: bool | Sequence[Any] = True,
        maintain_every_s: float = 60.0,
    ) -> None:
        if raw_days < 1 or rollup_days < raw_days:
            raise ValueError("raw_days: must be at least 1, and rollup_days at least raw_days")
        self.aggregate_specs = aggregates
        self.maintain_every_s = maintain_every_s
        self.aggregates: Any = None  # edgemetrics.query.aggregates.Aggregates, once started
        self.maintenance_runs = 0
        self.raw_days = raw_days
        self.rollup_days = rollup_days
        self.every_s = every_s
        self.export_dir = export_dir
        self.rollups = rollups
        self.clock = clock
        self.last_report: RetentionReport | None = None
        self.runs = 0
        self.deleted = 0  # raw rows deleted by this policy so far
        self._next = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, store: EmbeddedStore) -> None:
        """Enforce every ``every_s`` seconds on a daemon thread until :meth:`stop`, so an
        idle store is cleaned too, and maintain the derived tables there."""
        if self._thread is not None:
            return
        self._stop.clear()
        if self.aggregate_specs is not False and self.aggregates is None:
            from edgemetrics.query.aggregates import DEFAULT_SPECS, Aggregates

            specs = DEFAULT_SPECS if self.aggregate_specs is True else self.aggregate_specs
            self.aggregates = Aggregates(store, specs, clock=self.clock)

        def loop() -> None:
            # The first write enforces at once; the schedule covers a store left idle.
            due = time.monotonic() + max(self.every_s, 0.01)
            maintain = time.monotonic()  # the derived tables: built at once
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= due:
                    self.maybe_enforce(store)
                    due = now + max(self.every_s, 0.01)
                if self.aggregates is not None and now >= maintain:
                    self.maintain()
                    maintain = time.monotonic() + max(self.maintain_every_s, 0.01)
                wait = min(due, maintain if self.aggregates is not None else due)
                timeout = max(wait - time.monotonic(), 0.0)
                if self.aggregates is not None:
                    if self.aggregates.wait_requested(min(timeout, 1.0)):
                        maintain = time.monotonic()
                else:
                    self._stop.wait(timeout)

        self._thread = threading.Thread(target=loop, name="edgemetrics-retention", daemon=True)
        self._thread.start()
        # A daemon thread still inside DuckDB when the interpreter exits aborts the process.
        atexit.register(self.stop)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the thread; a maintenance run in progress stops after the segment it is
        building (one transaction), so the store can close."""
        self._stop.set()
        if self.aggregates is not None:
            self.aggregates.request_refresh()  # wakes the thread, which sees the stop
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        atexit.unregister(self.stop)

    def maintain(self) -> None:
        """Bring the derived tables up to date now; never raises (a failure is logged)."""
        try:
            self.aggregates.refresh(stop=self._stop)
            self.maintenance_runs += 1
        except Exception:
            log.exception("edgemetrics: maintenance of derived tables failed; tried again soon")

    def maybe_enforce(self, store: EmbeddedStore) -> RetentionReport | None:
        """Enforce when the interval has passed; never raises (a failure is logged)."""
        if time.monotonic() < self._next:
            return None
        # Blocking: a write that arrives while the schedule runs waits, then judges the
        # interval again, so what it wrote is never missed by a run that began before it.
        with self._lock:
            now = time.monotonic()
            if now < self._next:
                return None
            return self._enforce(store, now)

    def _enforce(self, store: EmbeddedStore, now: float) -> RetentionReport | None:
        try:
            self._next = now + self.every_s
            self.last_report = enforce_retention(
                store,
                now=self.clock(),
                raw_days=self.raw_days,
                rollup_days=self.rollup_days,
                export_dir=self.export_dir,
                rollups=self.rollups,
                aggregates=self.aggregates,
            )
            self.runs += 1
            self.deleted += sum(
                n
                for table, n in self.last_report.deleted.items()
                if not table.startswith(ROLLUP_PREFIX)
            )
            return self.last_report
        except Exception:
            log.exception("edgemetrics: retention run failed; it is tried again next interval")
            return None
