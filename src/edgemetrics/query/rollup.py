"""Daily rollups: raw data points summed per UTC day and per every dimension, kept two years.

A rollup row holds, for one day, one event type and one combination of dimension values,
the stored row count, the largest sample interval, and for each row expression ``e`` of
the family ``s_e = sum(e · s)``, ``q_e = sum(e² · s · (s - 1))`` and the cross terms a
ratio needs, so sums, estimates and confidence intervals read from rollups agree with the
raw answer (see :mod:`edgemetrics.query.result`). Quantiles need raw rows and are not
rolled up.

Rollups live in DuckDB (:class:`DuckDBRollups`, the embedded default, usually the store's
own file) or PostgreSQL (:class:`PostgresRollups`, production). :func:`build` fills them
from any backend (the embedded store or Cloudflare's SQL API): one transaction per
(family, day), so it is idempotent, resumable, and backfills whatever day is missing.
``edgemetrics rollup`` runs it (:func:`add_command`).

>>> import tempfile, os
>>> from edgemetrics.store import EmbeddedStore
>>> from edgemetrics.query.backends import EmbeddedBackend
>>> store = EmbeddedStore(os.path.join(tempfile.mkdtemp(), "e.duckdb"))
>>> rollups = DuckDBRollups(store)
>>> build(EmbeddedBackend(store), rollups, now=datetime(2024, 1, 3, tzinfo=UTC)).days_built
0
>>> store.close()
"""

from __future__ import annotations

import argparse
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol

from edgemetrics.principal import Principal
from edgemetrics.query.compiler import SqlPart, literal
from edgemetrics.query.model import Query, QueryError
from edgemetrics.query.semantic import (
    CREATOR_FAMILIES,
    DIMENSIONS,
    EXPRS,
    FAMILIES,
    TABLES,
    Component,
    Dimension,
    Expr,
    col,
    covariance_pairs,
    dimensions_for,
    parse_filter_value,
)

ROLLUP_PREFIX = "edgemetrics_rollup_"
STATE_TABLE = "edgemetrics_rollup_days"
RETENTION_DAYS = 730


def rollup_table(family: str) -> str:
    return ROLLUP_PREFIX + family


def _numeric(dim: Dimension) -> bool:
    return dim.kind in ("bool", "status_class")


def _cov_name(a: Expr, b: Expr) -> str:
    return f"cv_{a.name}__{b.name}"


def rollup_columns(family: str) -> list[tuple[str, str]]:
    """(column, type) of a family's rollup table; types are portable SQL."""
    cols = [("day", "DATE"), ("type", "TEXT"), ("tenant", "TEXT")]
    cols += [
        (d.name, "DOUBLE PRECISION" if _numeric(d) else "TEXT") for d in dimensions_for(family)
    ]
    cols += [("n_rows", "BIGINT"), ("max_si", "BIGINT")]
    for e in EXPRS[family].values():
        cols += [(f"s_{e.name}", "DOUBLE PRECISION"), (f"q_{e.name}", "DOUBLE PRECISION")]
    cols += [(_cov_name(a, b), "DOUBLE PRECISION") for a, b in covariance_pairs()[family]]
    return cols


def source_sql(family: str, first: date, end: date, dialect: str) -> str:
    """The SQL that sums the UTC days ``[first, end)`` of a family's raw rows, per day, in the
    source's dialect (``ae`` or ``duckdb``)."""
    from edgemetrics.query.compiler import _time_sql, dimension_sql

    weight = "_sample_interval" if dialect == "ae" else "CAST(_sample_interval AS DOUBLE)"
    var_weight = f"{weight} * ({weight} - 1)"
    start = datetime.combine(first, time(), UTC)
    stop = datetime.combine(end, time(), UTC)
    tenant = "index1" if family in CREATOR_FAMILIES else "''"
    day = (
        "toUnixTimestamp(toStartOfInterval(timestamp, INTERVAL '1' DAY, 'UTC'))"
        if dialect == "ae"
        else "epoch(date_trunc('day', timestamp))"
    )
    keys = [f"{day} AS day", f"{col(family, 'type')} AS type", f"{tenant} AS tenant"]
    keys += [f"{dimension_sql(d, family, dialect)} AS {d.name}" for d in dimensions_for(family)]
    count = "count()" if dialect == "ae" else "count(*)"
    aggs = [f"{count} AS n_rows", "max(_sample_interval) AS max_si"]
    for e in EXPRS[family].values():
        x = e.sql()
        aggs.append(f"sum({weight if x == '1' else f'{x} * {weight}'}) AS s_{e.name}")
        aggs.append(f"sum({var_weight if x == '1' else f'{x} * {x} * {var_weight}'}) AS q_{e.name}")
    for a, b in covariance_pairs()[family]:
        product = " * ".join(x for x in (a.sql(), b.sql()) if x != "1") or "1"
        term = var_weight if product == "1" else f"{product} * {var_weight}"
        aggs.append(f"sum({term}) AS {_cov_name(a, b)}")
    group = ", ".join(["day", "type", "tenant", *[d.name for d in dimensions_for(family)]])
    return (
        f"SELECT {', '.join(keys + aggs)} FROM {TABLES[family]} "
        f"WHERE timestamp >= {_time_sql(start, dialect)} "
        f"AND timestamp < {_time_sql(stop, dialect)} GROUP BY {group}"
    )


class RollupStore(Protocol):
    dialect: str
    name: str

    def run(self, sql: str) -> list[dict[str, Any]]: ...

    def built_days(self, family: str) -> set[date]: ...

    def replace_day(self, family: str, day: date, rows: list[dict[str, Any]]) -> None: ...

    def delete_before(self, day: date) -> int: ...


def _ddl(family: str, dialect: str) -> str:
    cols = ", ".join(
        f"{name} {'DOUBLE' if dialect == 'duckdb' and kind == 'DOUBLE PRECISION' else kind}"
        for name, kind in rollup_columns(family)
    )
    return f"CREATE TABLE IF NOT EXISTS {rollup_table(family)} ({cols})"


_STATE_DDL = (
    f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (family TEXT NOT NULL, day DATE NOT NULL, "
    "source_rows BIGINT NOT NULL, built_at TIMESTAMP NOT NULL, PRIMARY KEY (family, day))"
)


def _row_values(family: str, row: dict[str, Any], day: date) -> tuple[Any, ...]:
    out: list[Any] = []
    for name, kind in rollup_columns(family):
        if name == "day":
            out.append(day)
        elif kind == "TEXT":
            out.append("" if row.get(name) is None else str(row[name]))
        elif kind == "BIGINT":
            out.append(int(float(row.get(name) or 0)))
        else:
            out.append(float(row.get(name) or 0.0))
    return tuple(out)


class DuckDBRollups:
    """Rollup tables in a DuckDB database: the embedded store's own file by default.

    Pass an :class:`~edgemetrics.store.EmbeddedStore` to share its connection (DuckDB lets
    one process own a file), or a path for a separate file.
    """

    dialect = "duckdb"

    def __init__(self, target: Any) -> None:
        import duckdb

        from edgemetrics.store import EmbeddedStore

        if isinstance(target, EmbeddedStore):
            self._con = target._con
            self.name = f"duckdb-rollups:{target.path}"
        else:
            self._con = duckdb.connect(str(target))
            self.name = f"duckdb-rollups:{target}"
        self._lock = threading.Lock()
        self._local = threading.local()
        for family in FAMILIES:
            self._con.execute(_ddl(family, "duckdb")).fetchall()
        self._con.execute(_STATE_DDL).fetchall()

    def _cursor(self) -> Any:
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._con.cursor()
            self._local.cursor = cur
        return cur

    def run(self, sql: str) -> list[dict[str, Any]]:
        result = self._cursor().execute(sql)
        names = [d[0] for d in result.description or []]
        return [dict(zip(names, r, strict=True)) for r in result.fetchall()]

    def built_days(self, family: str) -> set[date]:
        rows = (
            self._cursor()
            .execute(f"SELECT day FROM {STATE_TABLE} WHERE family = ?", [family])
            .fetchall()
        )
        return {r[0] for r in rows}

    def replace_day(self, family: str, day: date, rows: list[dict[str, Any]]) -> None:
        names = [n for n, _ in rollup_columns(family)]
        values = [_row_values(family, r, day) for r in rows]
        with self._lock:
            cur = self._cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                cur.execute(f"DELETE FROM {rollup_table(family)} WHERE day = ?", [day])
                if values:
                    cur.executemany(
                        f"INSERT INTO {rollup_table(family)} ({', '.join(names)}) "
                        f"VALUES ({', '.join('?' for _ in names)})",
                        values,
                    )
                cur.execute(
                    f"DELETE FROM {STATE_TABLE} WHERE family = ? AND day = ?", [family, day]
                )
                cur.execute(
                    f"INSERT INTO {STATE_TABLE} VALUES (?, ?, ?, ?)",
                    [
                        family,
                        day,
                        sum(int(v[names.index("n_rows")]) for v in values),
                        datetime.now(UTC).replace(tzinfo=None),
                    ],
                )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def delete_before(self, day: date) -> int:
        deleted = 0
        with self._lock:
            cur = self._cursor()
            for family in FAMILIES:
                n = cur.execute(
                    f"DELETE FROM {rollup_table(family)} WHERE day < ?", [day]
                ).fetchall()
                deleted += int(n[0][0]) if n else 0
            cur.execute(f"DELETE FROM {STATE_TABLE} WHERE day < ?", [day]).fetchall()
        return deleted


class PostgresRollups:
    """Rollup tables in PostgreSQL (needs the ``[postgres]`` extra: psycopg 3)."""

    dialect = "postgres"

    def __init__(self, dsn: str) -> None:
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "PostgreSQL rollups need psycopg: pip install 'edgemetrics[postgres]'"
            ) from exc
        self._psycopg = psycopg
        self.dsn = dsn
        self.name = "postgres-rollups"
        self._lock = threading.Lock()
        with self._connect() as conn:
            for family in FAMILIES:
                conn.execute(_ddl(family, "postgres"))
                conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {rollup_table(family)}_day "
                    f"ON {rollup_table(family)} (day, tenant)"
                )
            conn.execute(_STATE_DDL)

    def _connect(self) -> Any:
        return self._psycopg.connect(self.dsn, autocommit=False)

    def run(self, sql: str) -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        with self._connect() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql)
            return list(cur.fetchall())

    def built_days(self, family: str) -> set[date]:
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT day FROM {STATE_TABLE} WHERE family = %s", [family]
            ).fetchall()
        return {r[0] for r in rows}

    def replace_day(self, family: str, day: date, rows: list[dict[str, Any]]) -> None:
        names = [n for n, _ in rollup_columns(family)]
        values = [_row_values(family, r, day) for r in rows]
        with self._connect() as conn:  # one transaction: committed on exit, rolled back on error
            conn.execute(f"DELETE FROM {rollup_table(family)} WHERE day = %s", [day])
            if values:
                with conn.cursor() as cur:
                    cur.executemany(
                        f"INSERT INTO {rollup_table(family)} ({', '.join(names)}) "
                        f"VALUES ({', '.join('%s' for _ in names)})",
                        values,
                    )
            conn.execute(f"DELETE FROM {STATE_TABLE} WHERE family = %s AND day = %s", [family, day])
            conn.execute(
                f"INSERT INTO {STATE_TABLE} VALUES (%s, %s, %s, now())",
                [family, day, sum(int(v[names.index("n_rows")]) for v in values)],
            )

    def delete_before(self, day: date) -> int:
        deleted = 0
        with self._connect() as conn:
            for family in FAMILIES:
                cur = conn.execute(f"DELETE FROM {rollup_table(family)} WHERE day < %s", [day])
                deleted += cur.rowcount
            conn.execute(f"DELETE FROM {STATE_TABLE} WHERE day < %s", [day])
        return deleted


# --- building ---------------------------------------------------------------------------------


@dataclass
class BuildReport:
    days_built: int = 0
    days_skipped: int = 0
    rows_written: int = 0
    built: list[tuple[str, date]] = field(default_factory=list)


def _first_day(backend: Any, family: str) -> date | None:
    rows = backend.run(f"SELECT min(timestamp) AS t FROM {TABLES[family]}")
    value = rows[0]["t"] if rows else None
    if value is None or value == "" or str(value).startswith("1970-01-01"):
        return None
    if isinstance(value, datetime):
        return value.date()
    return date.fromisoformat(str(value)[:10])


def build(
    backend: Any,
    rollups: RollupStore,
    *,
    since: date | None = None,
    until: date | None = None,
    families: tuple[str, ...] = FAMILIES,
    rebuild: bool = False,
    now: datetime | None = None,
    chunk_days: int = 31,
) -> BuildReport:
    """Build every missing day of ``families`` from ``since`` (default: the first raw day) up
    to ``until`` (default: yesterday, UTC; today is not complete yet).

    Days already built are skipped unless ``rebuild``; each day is replaced in one
    transaction, so an interrupted run resumes where it stopped and a rerun changes nothing.
    """
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    last = min(until or today - timedelta(days=1), today - timedelta(days=1))
    report = BuildReport()
    for family in families:
        first = since or _first_day(backend, family)
        if first is None:
            continue
        done = set() if rebuild else rollups.built_days(family)
        missing = []
        day = first
        while day <= last:
            if day in done:
                report.days_skipped += 1
            else:
                missing.append(day)
            day += timedelta(days=1)
        # One source query per run of consecutive missing days (at most a month), then
        # one transaction per day.
        runs: list[list[date]] = []
        for d in missing:
            if runs and d - runs[-1][-1] == timedelta(days=1) and len(runs[-1]) < chunk_days:
                runs[-1].append(d)
            else:
                runs.append([d])
        for run in runs:
            rows = backend.run(
                source_sql(family, run[0], run[-1] + timedelta(days=1), backend.dialect)
            )
            by_day: dict[date, list[dict[str, Any]]] = {d: [] for d in run}
            for row in rows:
                by_day[datetime.fromtimestamp(int(float(row["day"])), UTC).date()].append(row)
            for d in run:
                rollups.replace_day(family, d, by_day[d])
                report.days_built += 1
                report.rows_written += len(by_day[d])
                report.built.append((family, d))
    return report


# --- reading ----------------------------------------------------------------------------------


def _dim_sql(name: str) -> str:
    # Rollup tables name their dimension columns after the semantic layer's dimensions.
    assert name in DIMENSIONS
    return name


def compile_rollup_part(
    part: SqlPart, dialect: str, query: Query, principal: Principal, first: date, end: date
) -> str:
    """The rollup counterpart of a sum part over the UTC days ``[first, end)``."""
    if part.quantile is not None:
        raise QueryError(
            "time_range: quantiles are computed from raw data, kept 90 days; "
            "pick a range within the last 90 days [raw_only]"
        )
    if query.bucket == "hour":
        raise QueryError(
            "bucket: rollups are daily; hourly buckets need a range within 90 days [daily]"
        )
    family = part.family

    def lit(v: str | int) -> str:
        return literal(v, dialect)

    def types_cond(types: tuple[str, ...]) -> str:
        return "(" + " OR ".join(f"type = {lit(t)}" for t in types) + ")"

    def comp_cond(c: Component) -> str:
        cond = types_cond(c.types)
        if c.min_status_class is not None:
            cond += f" AND status_class >= {c.min_status_class}"
        return cond

    keys = []
    for i, name in enumerate(part.keys):
        if name == "bucket":
            assert query.bucket is not None
            keys.append(
                f"CAST(date_trunc('{query.bucket}', CAST(day AS TIMESTAMP)) AS DATE) AS d{i}"
            )
        else:
            keys.append(f"{_dim_sql(name)} AS d{i}")
    select = [*keys, "sum(n_rows) AS _rows", "max(max_si) AS _maxsi"]
    for i, c in enumerate(part.components):
        select.append(f"sum(s_{c.expr.name}) FILTER (WHERE {comp_cond(c)}) AS s{i}")
        select.append(f"sum(q_{c.expr.name}) FILTER (WHERE {comp_cond(c)}) AS v{i}")
    for k, (a, b) in enumerate(part.covariances):
        ca, cb = part.components[a], part.components[b]
        select.append(
            f"sum({_cov_name(ca.expr, cb.expr)}) "
            f"FILTER (WHERE {comp_cond(ca)} AND {comp_cond(cb)}) AS c{k}"
        )
    conds = [
        f"day >= DATE {lit(first.isoformat())}",
        f"day < DATE {lit(end.isoformat())}",
        types_cond(part.types),
    ]
    if principal.role == "creator":
        assert principal.creator_id is not None
        v = lit(principal.creator_id)
        conds.append(f"(tenant = {v} AND creator = {v})")
    for flt in query.filters:
        dim = DIMENSIONS[flt.dimension]
        terms = [f"{_dim_sql(dim.name)} = {lit(parse_filter_value(dim, v))}" for v in flt.values]
        cond = "(" + " OR ".join(terms) + ")"
        conds.append(f"NOT {cond}" if flt.op in ("ne", "not_in") else cond)
    sql = f"SELECT {', '.join(select)} FROM {rollup_table(family)} WHERE {' AND '.join(conds)}"
    if part.keys:
        sql += " GROUP BY " + ", ".join(f"d{i}" for i in range(len(part.keys)))
    return sql


# --- CLI --------------------------------------------------------------------------------------


def _parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a YYYY-MM-DD date") from exc


def add_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``edgemetrics rollup``.

    >>> parser = argparse.ArgumentParser(prog="edgemetrics")
    >>> add_command(parser.add_subparsers())
    >>> args = parser.parse_args(["rollup", "--store", "x.duckdb", "--since", "2024-01-01"])
    >>> args.since, args.func is _main
    (datetime.date(2024, 1, 1), True)
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        "rollup",
        help="build missing daily rollups (idempotent, resumable)",
        description="Sum raw data points into daily rollups, day by day; days already built are "
        "skipped unless --rebuild. Source: the embedded store (--store) or Cloudflare's SQL API "
        "(--cf-account and the CLOUDFLARE_API_TOKEN environment variable). Target: PostgreSQL "
        "(--postgres DSN) or DuckDB (--rollups FILE; default: the store's own file).",
    )
    p.add_argument("--store", help="embedded DuckDB store file to read raw data from")
    p.add_argument("--cf-account", help="Cloudflare account id (token from CLOUDFLARE_API_TOKEN)")
    p.add_argument("--postgres", help="PostgreSQL DSN for the rollup tables")
    p.add_argument("--rollups", help="DuckDB file for the rollup tables")
    p.add_argument("--since", type=_parse_day, help="first day (default: first raw day)")
    p.add_argument("--until", type=_parse_day, help="last day (default: yesterday, UTC)")
    p.add_argument("--rebuild", action="store_true", help="rebuild days already built")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    import os

    from edgemetrics.query.backends import CloudflareBackend, EmbeddedBackend

    store = None
    backend: Any
    if args.store:
        from edgemetrics.store import EmbeddedStore

        store = EmbeddedStore(args.store)
        backend = EmbeddedBackend(store)
    elif args.cf_account:
        token = os.environ.get("CLOUDFLARE_API_TOKEN", "")
        if not token:
            print("rollup: set CLOUDFLARE_API_TOKEN for --cf-account", file=sys.stderr)
            return 2
        backend = CloudflareBackend(args.cf_account, token)
    else:
        print("rollup: give --store FILE or --cf-account ID", file=sys.stderr)
        return 2
    target: RollupStore
    if args.postgres:
        target = PostgresRollups(args.postgres)
    elif args.rollups:
        target = DuckDBRollups(args.rollups)
    elif store is not None:
        target = DuckDBRollups(store)
    else:
        print("rollup: give --postgres DSN or --rollups FILE", file=sys.stderr)
        return 2
    report = build(backend, target, since=args.since, until=args.until, rebuild=args.rebuild)
    print(
        f"rollup: built {report.days_built} day(s), {report.rows_written} rollup row(s); "
        f"{report.days_skipped} day(s) already built"
    )
    if store is not None:
        store.close()
    return 0
