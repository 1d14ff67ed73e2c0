"""SQLAlchemy: every statement an engine runs becomes a db_query event.

The event carries the statement's fingerprint (literals and parameters removed: no user
data), its kind (SELECT, INSERT...), the duration and the row count the driver reported.

>>> import edgemetrics
>>> from edgemetrics.sinks import MemorySink
>>> from sqlalchemy import create_engine, text
>>> sink = MemorySink()
>>> _ = edgemetrics.configure(sink=sink)
>>> engine = instrument(create_engine("sqlite://"), database="main")
>>> with engine.connect() as conn:
...     conn.execute(text("SELECT :x + 1"), {"x": 41}).scalar()
42
>>> edgemetrics.flush() and (sink.events[-1].fingerprint, sink.events[-1].operation)
('SELECT ? + ?', 'SELECT')
>>> edgemetrics.shutdown()
"""

from __future__ import annotations

from time import perf_counter
from typing import Any, TypeVar

from edgemetrics import track
from edgemetrics.events import DbQuery
from edgemetrics.optional_deps import require
from edgemetrics.sql_fingerprint import fingerprint, operation

Engine = TypeVar("Engine")

_START_KEY = "edgemetrics_query_start"


def instrument(engine: Engine, *, service: str = "app", database: str | None = None) -> Engine:
    """Listen to an Engine (or AsyncEngine) for statement timings; returns the engine.

    ``database`` labels the events (default: the engine's database name, or its dialect).
    """
    sqlalchemy = require("sqlalchemy", extra="sqlalchemy", integration="sqlalchemy")
    sync_engine = getattr(engine, "sync_engine", engine)
    if not isinstance(sync_engine, sqlalchemy.engine.Engine):
        raise TypeError(f"engine: expected a SQLAlchemy Engine, got {type(engine).__name__}")
    # A file path names the database by its file name; never a directory layout.
    label = (database or sync_engine.url.database or "").rsplit("/", 1)[-1][:64]
    label = label or sync_engine.dialect.name

    def before(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        conn.info.setdefault(_START_KEY, []).append(perf_counter())

    def after(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        starts = conn.info.get(_START_KEY)
        if not starts:
            return
        duration_ms = (perf_counter() - starts.pop()) * 1000.0
        try:
            rows = cursor.rowcount if cursor is not None and cursor.rowcount > 0 else 0
            track(
                DbQuery(
                    service=service,
                    fingerprint=fingerprint(statement),
                    operation=operation(statement),
                    duration_ms=duration_ms,
                    rows=rows,
                    database=label,
                )
            )
        except Exception:  # instrumentation must never break the query
            pass

    def failed(context: Any) -> None:
        starts = context.connection.info.get(_START_KEY) if context.connection is not None else None
        if starts:
            starts.pop()

    sqlalchemy.event.listen(sync_engine, "before_cursor_execute", before)
    sqlalchemy.event.listen(sync_engine, "after_cursor_execute", after)
    sqlalchemy.event.listen(sync_engine, "handle_error", failed)
    return engine
