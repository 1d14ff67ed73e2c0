"""Raw data retention for the embedded store: rows older than 90 days are deleted, on a
schedule, as AE itself does; daily rollups (:mod:`.rollup`) keep the history.

>>> import os, tempfile
>>> from edgemetrics.store import EmbeddedStore
>>> store = EmbeddedStore(os.path.join(tempfile.mkdtemp(), "e.duckdb"))
>>> Retention(store).run_once()
0
>>> store.close()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from edgemetrics.store import DATASETS

log = logging.getLogger("edgemetrics")

RAW_RETENTION_DAYS = 90


class Retention:
    """Deletes raw rows older than ``days`` from every dataset of an embedded store.

    ``start()`` runs :meth:`run_once` every ``interval`` seconds (default hourly) on a daemon
    thread until ``stop()``; the owning process calls it (the collector or the demo).
    ``rollups`` (a :class:`~edgemetrics.query.rollup.RollupStore`) also loses days older than
    ``rollup_days`` (two years).
    """

    def __init__(
        self,
        store: Any,
        *,
        days: int = RAW_RETENTION_DAYS,
        interval: float = 3600.0,
        rollups: Any = None,
        rollup_days: int = 730,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if days < 1:
            raise ValueError("days: keep raw data at least one day [range]")
        self.store = store
        self.days = days
        self.interval = interval
        self.rollups = rollups
        self.rollup_days = rollup_days
        self._clock = clock or (lambda: datetime.now(UTC))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0
        self.deleted = 0

    def cutoff(self) -> datetime:
        return self._clock().astimezone(UTC) - timedelta(days=self.days)

    def run_once(self) -> int:
        """Delete what is past retention now; returns the number of raw rows deleted."""
        cutoff = self.cutoff().replace(tzinfo=None)
        deleted = 0
        for table in DATASETS:
            before = self.store.query(
                f"SELECT count(*) AS n FROM {table} WHERE timestamp < ?", [cutoff]
            )
            n = int(before[0]["n"])
            if n:
                self.store.execute(f"DELETE FROM {table} WHERE timestamp < ?", [cutoff])
                deleted += n
        if self.rollups is not None:
            self.rollups.delete_before((self._clock() - timedelta(days=self.rollup_days)).date())
        self.runs += 1
        self.deleted += deleted
        return deleted

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, name="edgemetrics-retention", daemon=True
        )
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # keep the schedule alive; the next run retries
                log.exception("edgemetrics: retention run failed")
            self._stop.wait(self.interval)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
