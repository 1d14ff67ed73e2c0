"""One compiler, two dialects: a :class:`~edgemetrics.query.model.Query` to AE SQL or DuckDB SQL.

AE SQL uses only the documented subset: one table, no JOIN, no COALESCE, ``sumIf``,
``toStartOfInterval``, ``quantileExactWeighted``, ``intDiv``. DuckDB SQL says the same
thing in DuckDB's words (``sum(..) FILTER (WHERE ..)``, ``date_trunc``, a cumulative
window for the weighted quantile). Identifiers come only from :mod:`.semantic`; every
value is a literal escaped by :func:`literal` for the dialect.

A query becomes one or more :class:`SqlPart` statements: one per family for the summed
components, one per quantile source. The engine merges them by their dimension keys.

>>> from edgemetrics.principal import Principal
>>> from edgemetrics.query.model import Query, TimeRange
>>> from datetime import datetime, UTC
>>> q = Query(("views",), ("country",), time_range=TimeRange.between(
...     datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)))
>>> part = plan(q, Principal.creator("c1")).parts[0]
>>> sql = compile_part(part, "ae", *plan(q, Principal.creator("c1")).bounds())
>>> print(sql)  # doctest: +NORMALIZE_WHITESPACE
SELECT blob7 AS d0, count() AS _rows, max(_sample_interval) AS _maxsi,
  sum(_sample_interval) AS s0,
  sum(_sample_interval * (_sample_interval - 1)) AS v0
FROM edgemetrics_content
WHERE timestamp >= toDateTime(1704067200) AND timestamp < toDateTime(1704153600)
  AND (blob1 = 'view') AND (index1 = 'c1' AND blob4 = 'c1')
GROUP BY d0 ORDER BY s0 DESC, d0 ASC LIMIT 1000 OFFSET 0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from edgemetrics.principal import Principal
from edgemetrics.query.model import AccessDenied, Filter, Query, QueryError, TimeRange
from edgemetrics.query.semantic import (
    CREATOR_FAMILIES,
    DIMENSIONS,
    METRICS,
    TABLES,
    TENANT_COLUMN,
    Component,
    Dimension,
    Expr,
    Metric,
    col,
    parse_filter_value,
)

Dialect = Literal["ae", "duckdb"]
DIALECTS: tuple[str, ...] = ("ae", "duckdb")
Z95 = 1.959963984540054
# Rank offsets around a quantile level, for its confidence interval under sampling.
CI_OFFSETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def literal(value: str | int | float, dialect: str) -> str:
    """``value`` as a SQL literal of ``dialect``; strings are quoted and escaped.

    ClickHouse (AE) strings take backslash escapes; DuckDB and PostgreSQL strings are
    standard SQL, where only the quote is doubled. NUL is escaped for ClickHouse, kept raw
    for DuckDB (its strings may hold it) and refused by PostgreSQL's text type.

    >>> literal("it's", "ae"), literal("a\\\\b", "ae"), literal("it's", "duckdb")
    ("'it\\\\'s'", "'a\\\\\\\\b'", "'it''s'")
    >>> literal(5, "ae")
    '5'
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise QueryError(f"value: {value!r} is not a string or number [type]")
    if not isinstance(value, str):
        if value != value or value in (float("inf"), float("-inf")):
            raise QueryError("value: not a finite number [finite]")
        return repr(value) if isinstance(value, float) else str(value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise QueryError("value: not encodable as UTF-8 [utf8]") from exc
    if dialect == "ae":
        out = value.replace("\\", "\\\\").replace("'", "\\'").replace("\x00", "\\0")
        return f"'{out}'"
    if dialect == "postgres" and "\x00" in value:
        raise QueryError("value: PostgreSQL text cannot hold NUL [no_nul]")
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class QuantileSpec:
    expr: Expr
    types: tuple[str, ...]
    levels: tuple[float, ...]


@dataclass(frozen=True)
class SqlPart:
    """One statement's worth of a query: a family, its sum components or one quantile source."""

    family: str
    keys: tuple[str, ...]  # output dimension names, ``bucket`` first when bucketed
    components: tuple[Component, ...] = ()
    covariances: tuple[tuple[int, int], ...] = ()
    quantile: QuantileSpec | None = None
    order: tuple[tuple[str, bool], ...] = ()  # (column alias, descending), pushed down
    limit: int | None = None
    offset: int = 0

    @property
    def types(self) -> tuple[str, ...]:
        if self.quantile is not None:
            return self.quantile.types
        seen: dict[str, None] = {}
        for c in self.components:
            for t in c.types:
                seen[t] = None
        return tuple(seen)

    def ci_levels(self) -> tuple[float, ...]:
        """The quantile levels to ask for the confidence intervals of this part's levels."""
        assert self.quantile is not None
        out: set[float] = set()
        for q in self.quantile.levels:
            for d in CI_OFFSETS:
                out.add(round(max(0.0, q - d), 6))
                out.add(round(min(1.0, q + d), 6))
        return tuple(sorted(out))


@dataclass
class Plan:
    query: Query
    principal: Principal
    metrics: tuple[Metric, ...]
    parts: list[SqlPart] = field(default_factory=list)
    families: tuple[str, ...] = ()
    sort_in_python: bool = True
    resolved: TimeRange | None = None

    def bounds(self) -> tuple[Query, Principal, datetime, datetime]:
        rng = self.resolved or self.query.time_range.resolve()
        assert rng.start is not None and rng.end is not None
        return self.query, self.principal, rng.start, rng.end


def validate(query: Query, principal: Principal) -> tuple[tuple[Metric, ...], tuple[str, ...]]:
    """Check names, families, access and required splits; returns the metrics and families."""
    metrics = []
    for name in query.metrics:
        if name not in METRICS:
            raise QueryError(f"metrics: unknown metric {name!r} [semantic_layer]")
        metrics.append(METRICS[name])
    families: dict[str, None] = {}
    for m in metrics:
        for f in sorted(m.families):
            families[f] = None
    if principal.role == "creator":
        denied = [m.name for m in metrics if not m.families <= CREATOR_FAMILIES]
        if denied:
            raise AccessDenied(
                f"metrics: {', '.join(denied)} are for the platform owner [owner_only]"
            )
    for name in query.dimensions:
        if name not in DIMENSIONS:
            raise QueryError(f"dimensions: unknown dimension {name!r} [semantic_layer]")
        missing = [f for f in families if f not in DIMENSIONS[name].fields]
        if missing:
            raise QueryError(
                f"dimensions: {name!r} does not apply to {', '.join(missing)} metrics [applicable]"
            )
    for flt in query.filters:
        if flt.dimension not in DIMENSIONS:
            raise QueryError(f"filters: unknown dimension {flt.dimension!r} [semantic_layer]")
        dim = DIMENSIONS[flt.dimension]
        missing = [f for f in families if f not in dim.fields]
        if missing:
            raise QueryError(
                f"filters.{flt.dimension}: does not apply to {', '.join(missing)} metrics "
                "[applicable]"
            )
        for v in flt.values:
            try:
                parse_filter_value(dim, v)
            except ValueError as exc:
                raise QueryError(str(exc)) from exc
    for m in metrics:
        for req in m.requires:
            if req not in query.dimensions:
                raise QueryError(
                    f"dimensions: {m.name} must be split by {req} (never summed across) [requires]"
                )
    for key in query.order_by:
        name = key.removeprefix("-")
        if name not in query.metrics and name not in query.output_dimensions:
            raise QueryError(
                f"order_by: {name!r} is not a metric or dimension of the query [member]"
            )
    return tuple(metrics), tuple(families)


def plan(query: Query, principal: Principal) -> Plan:
    """Split a query into SQL parts; push sort and paging down when one part answers it."""
    metrics, families = validate(query, principal)
    keys = query.output_dimensions
    out = Plan(query, principal, metrics, families=families)
    sums: dict[str, dict[Component, None]] = {}
    quantiles: dict[tuple[Expr, tuple[str, ...]], dict[float, None]] = {}
    for m in metrics:
        if m.kind == "quantile":
            assert m.quantile_of is not None
            quantiles.setdefault((m.quantile_of, m.quantile_types), {})[m.level] = None
        else:
            for c in m.sum_components():
                sums.setdefault(c.family, {})[c] = None
    for family, comps in sums.items():
        comp_list = tuple(comps)
        covs = []
        for m in metrics:
            if m.kind in ("ratio", "difference"):
                a = METRICS[m.parts[0]].sum_components()[0]
                b = METRICS[m.parts[1]].sum_components()[0]
                if a.family == family and a.overlaps(b):
                    pair = (comp_list.index(a), comp_list.index(b))
                    if pair not in covs:
                        covs.append(pair)
        out.parts.append(SqlPart(family, keys, components=comp_list, covariances=tuple(covs)))
    for (expr, types), levels in quantiles.items():
        out.parts.append(
            SqlPart(expr.family, keys, quantile=QuantileSpec(expr, types, tuple(levels)))
        )
    # Push ORDER BY/LIMIT into SQL when a single statement holds every sort key.
    # A query without dimensions answers exactly one row: nothing to sort or page.
    if keys and len(out.parts) == 1 and out.parts[0].quantile is None:
        part = out.parts[0]
        order: list[tuple[str, bool]] = []
        ok = True
        for key in _order_keys(query):
            desc = key.startswith("-")
            name = key.removeprefix("-")
            if name in keys:
                order.append((f"d{keys.index(name)}", desc))
            elif METRICS[name].kind == "sum":
                order.append((f"s{part.components.index(METRICS[name].sum_components()[0])}", desc))
            else:
                ok = False
        if ok:
            for i, _ in enumerate(keys):
                if (f"d{i}", False) not in order and (f"d{i}", True) not in order:
                    order.append((f"d{i}", False))
            out.parts[0] = SqlPart(
                part.family,
                keys,
                part.components,
                part.covariances,
                None,
                tuple(order),
                query.limit,
                query.offset,
            )
            out.sort_in_python = False
    return out


def _order_keys(query: Query) -> tuple[str, ...]:
    if query.order_by:
        return query.order_by
    if query.bucket:
        return ("bucket",)
    return ("-" + query.metrics[0],)


# --- rendering ------------------------------------------------------------------------------


def dimension_sql(dim: Dimension, family: str, dialect: str) -> str:
    column = dim.column(family)
    if dim.kind == "status_class":
        return f"intDiv({column}, 100)" if dialect == "ae" else f"floor({column} / 100)"
    return column


def bucket_sql(bucket: str, tz: str, dialect: str) -> str:
    """The bucket start as Unix seconds, truncated in the local calendar of ``tz``."""
    if dialect == "ae":
        unit = bucket.upper()
        z = literal(tz, dialect)
        # Week and month starts come back as a Date: make it the local midnight of that date.
        start = f"toStartOfInterval(timestamp, INTERVAL '1' {unit}, {z})"
        return f"toUnixTimestamp(toDateTime({start}, {z}))"
    if tz == "UTC":
        return f"epoch(date_trunc('{bucket}', timestamp))"
    z = literal(tz, dialect)
    local = f"timezone({z}, timezone('UTC', timestamp))"
    return f"epoch(timezone({z}, date_trunc('{bucket}', {local})))"


def _time_sql(t: datetime, dialect: str) -> str:
    seconds = int(t.timestamp())
    if dialect == "ae":
        return f"toDateTime({seconds})"
    return f"make_timestamp({seconds * 1_000_000})"


def _or(terms: list[str]) -> str:
    return "(" + " OR ".join(terms) + ")"


def _member(expr: str, values: list[str], dialect: str) -> str:
    """``expr`` equal to one of the literals: an OR chain in AE (its documented operators),
    an IN list in DuckDB (much faster there than the chain)."""
    if dialect == "ae" or len(values) == 1:
        return _or([f"{expr} = {v}" for v in values])
    return f"({expr} IN ({', '.join(values)}))"


def _types_sql(family: str, types: tuple[str, ...], dialect: str) -> str:
    return _member(col(family, "type"), [literal(t, dialect) for t in types], dialect)


def filter_sql(flt: Filter, family: str, dialect: str, column: str | None = None) -> str:
    """The condition of ``flt`` on the raw table of ``family``, or on ``column`` (a table of
    pre-aggregated rows that keeps the dimension's raw value under its own name)."""
    dim = DIMENSIONS[flt.dimension]
    expr = column or dimension_sql(dim, family, dialect)
    values = [literal(parse_filter_value(dim, v), dialect) for v in flt.values]
    cond = _member(expr, values, dialect)
    return f"NOT {cond}" if flt.op in ("ne", "not_in") else cond


def principal_sql(
    principal: Principal,
    family: str,
    dialect: str,
    *,
    tenant: str = TENANT_COLUMN,
    creator: str | None = None,
) -> str | None:
    """The tenancy conjunct: a creator sees rows indexed *and* attributed to its id only.

    ``tenant`` and ``creator`` name the two columns in a table of pre-aggregated rows; by
    default they are the raw table's index and creator id columns.
    """
    if principal.role == "owner":
        return None
    if family not in CREATOR_FAMILIES:
        raise AccessDenied(f"metrics: {family} data is for the platform owner [owner_only]")
    assert principal.creator_id is not None
    value = literal(principal.creator_id, dialect)
    return f"({tenant} = {value} AND {creator or col(family, 'creator_id')} = {value})"


def _component_cond(c: Component, dialect: str) -> str:
    cond = _types_sql(c.family, c.types, dialect)
    if c.min_status_class is not None:
        status = dimension_sql(DIMENSIONS["status_class"], c.family, dialect)
        cond = f"{cond} AND {status} >= {c.min_status_class}"
    return cond


def _weighted(expr: str, weight: str) -> str:
    return weight if expr == "1" else f"{expr} * {weight}"


def _redundant(c: Component, part: SqlPart) -> bool:
    return c.min_status_class is None and set(c.types) == set(part.types)


def _agg(expr: str, cond: str | None, dialect: str) -> str:
    if cond is None:
        return f"sum({expr})"
    if dialect == "ae":
        return f"sumIf({expr}, {cond})"
    return f"sum({expr}) FILTER (WHERE {cond})"


def where_sql(
    part: SqlPart,
    query: Query,
    principal: Principal,
    start: datetime,
    end: datetime,
    dialect: str,
    *,
    by_type: bool = False,
    outside: tuple[datetime, datetime] | None = None,
) -> str:
    conds = [
        f"timestamp >= {_time_sql(start, dialect)}",
        f"timestamp < {_time_sql(end, dialect)}",
    ]
    if outside is not None:
        a, b = (_time_sql(t, dialect) for t in outside)
        # DuckDB still skips row groups by their timestamp range under this OR.
        conds.append(f"(timestamp < {a} OR timestamp >= {b})")
    if not by_type:
        conds.append(_types_sql(part.family, part.types, dialect))
    tenancy = principal_sql(principal, part.family, dialect)
    if tenancy:
        conds.append(tenancy)
    conds.extend(filter_sql(f, part.family, dialect) for f in query.filters)
    return " AND ".join(conds)


def key_columns(part: SqlPart, query: Query, dialect: str) -> list[str]:
    out = []
    for i, name in enumerate(part.keys):
        if name == "bucket":
            assert query.bucket is not None
            out.append(f"{bucket_sql(query.bucket, query.tz, dialect)} AS d{i}")
        else:
            out.append(f"{dimension_sql(DIMENSIONS[name], part.family, dialect)} AS d{i}")
    return out


def compile_part(
    part: SqlPart,
    dialect: str,
    query: Query,
    principal: Principal,
    start: datetime,
    end: datetime,
    *,
    ci: bool = False,
    variances: bool = True,
    weighted: bool = True,
    grouped_by_type: bool = True,
    source: str | None = None,
    outside: tuple[datetime, datetime] | None = None,
) -> str:
    """The SQL text of one part in ``dialect`` (``ae`` or ``duckdb``) over ``[start, end)``.

    ``variances=False`` leaves out the variance sums: an engine whose rows are rarely
    sampled (the embedded store) asks for them only when ``_maxsi`` says it must.
    ``weighted=False`` lets DuckDB count rows instead of summing weights, and compute a
    quantile with ``quantile_disc``, which picks the same element as
    ``quantileExactWeighted`` when every weight is 1 (the ``ceil(n * q)``-th smallest): both
    are right while every row stands for one event, and the engine asks again, weighted,
    when ``_maxsi`` shows a sampled row.
    ``ci=True`` asks a quantile part for the levels around each quantile.
    ``grouped_by_type=False`` keeps the one-row form (``s0``, ``v0``...) where :func:`by_type`
    would group by event type, so the statement can be a branch of a ``UNION``.
    ``source``: a ``FROM`` item with the raw table's columns to read instead of the table
    (derived rows, :mod:`edgemetrics.query.aggregates`). ``outside=(a, b)`` leaves out the
    rows of ``[a, b)`` (those derived rows answer); summed parts only.
    """
    if dialect not in DIALECTS:
        raise QueryError(f"dialect: {dialect!r} is not one of {DIALECTS} [enum]")
    table = source or TABLES[part.family]
    if part.quantile is not None:
        return _compile_quantile(part, dialect, query, principal, start, end, ci, weighted, table)
    if outside is not None and (part.quantile is not None or grouped_by_type):
        raise QueryError("outside: only for the one-row form of a summed part [internal]")
    if grouped_by_type and by_type(part, dialect):
        return _compile_by_type(part, query, principal, start, end, variances, weighted, table)
    weight = "_sample_interval" if dialect == "ae" else "CAST(_sample_interval AS DOUBLE)"
    var_weight = f"{weight} * ({weight} - 1)"
    keys = key_columns(part, query, dialect)
    count = "count()" if dialect == "ae" else "count(*)"
    select = [*keys, f"{count} AS _rows", "max(_sample_interval) AS _maxsi"]
    for i, c in enumerate(part.components):
        e = c.expr.sql()
        # The WHERE clause already keeps only the part's types: one type set needs no filter.
        cond = None if _redundant(c, part) else _component_cond(c, dialect)
        if dialect == "duckdb" and not weighted:
            # Unweighted: equal to the weighted sum while every row stands for one event,
            # which _maxsi tells the engine (it asks again, weighted, otherwise).
            total = f"count(*) FILTER (WHERE {cond})" if cond else "count(*)"
            select.append(f"{total if e == '1' else _agg(e, cond, dialect)} AS s{i}")
        else:
            select.append(f"{_agg(_weighted(e, weight), cond, dialect)} AS s{i}")
        if variances:
            square = "1" if e == "1" else f"{e} * {e}"
            select.append(f"{_agg(_weighted(square, var_weight), cond, dialect)} AS v{i}")
    for k, (a, b) in enumerate(part.covariances if variances else ()):
        ca, cb = part.components[a], part.components[b]
        ea, eb = ca.expr.sql(), cb.expr.sql()
        product = "1" if ea == eb == "1" else " * ".join(x for x in (ea, eb) if x != "1")
        cond = f"{_component_cond(ca, dialect)} AND {_component_cond(cb, dialect)}"
        select.append(f"{_agg(_weighted(product, var_weight), cond, dialect)} AS c{k}")
    sql = (
        f"SELECT {', '.join(select)} FROM {table} "
        f"WHERE {where_sql(part, query, principal, start, end, dialect, outside=outside)}"
    )
    if part.keys:
        sql += " GROUP BY " + ", ".join(f"d{i}" for i in range(len(part.keys)))
    return sql + order_sql(part, dialect)


def order_sql(part: SqlPart, dialect: str) -> str:
    """The part's pushed-down ``ORDER BY ... LIMIT ... OFFSET ...``, or nothing."""
    sql = ""
    if part.order:
        terms = []
        for alias, desc in part.order:
            # DuckDB's FILTER yields NULL on no match where ClickHouse's sumIf yields 0.
            expr = alias if dialect == "ae" or alias.startswith("d") else f"coalesce({alias}, 0)"
            terms.append(f"{expr} {'DESC' if desc else 'ASC'}")
        sql += " ORDER BY " + ", ".join(terms)
    if part.limit is not None:
        sql += f" LIMIT {int(part.limit)} OFFSET {int(part.offset)}"
    return sql


def by_type(part: SqlPart, dialect: str) -> bool:
    """DuckDB answers a part without dimensions whose sums read several event types by
    grouping on the type (and status class) and adding up in Python: a handful of groups
    and no per-sum filters, several times faster than ``FILTER`` clauses and a type list."""
    return (
        dialect == "duckdb"
        and not part.keys
        and part.quantile is None
        and len({(c.types, c.min_status_class) for c in part.components}) > 1
    )


def by_type_exprs(part: SqlPart) -> tuple[Expr, ...]:
    seen: dict[Expr, None] = {}
    for c in part.components:
        seen[c.expr] = None
    return tuple(seen)


def _compile_by_type(
    part: SqlPart,
    query: Query,
    principal: Principal,
    start: datetime,
    end: datetime,
    variances: bool,
    weighted: bool,
    table: str,
) -> str:
    weight = "CAST(_sample_interval AS DOUBLE)"
    var_weight = f"{weight} * ({weight} - 1)"
    keys = [f"{col(part.family, 'type')} AS _type"]
    if any(c.min_status_class is not None for c in part.components):
        keys.append(
            f"{dimension_sql(DIMENSIONS['status_class'], part.family, 'duckdb')} AS _status"
        )
    select = [*keys, "count(*) AS _rows", "max(_sample_interval) AS _maxsi"]
    exprs = by_type_exprs(part)
    for i, e in enumerate(exprs):
        x = e.sql()
        if weighted:
            select.append(f"sum({_weighted(x, weight)}) AS e{i}")
        else:
            select.append(f"{'count(*)' if x == '1' else f'sum({x})'} AS e{i}")
        if variances:
            square = "1" if x == "1" else f"{x} * {x}"
            select.append(f"sum({_weighted(square, var_weight)}) AS ev{i}")
    if variances:
        for k, (a, b) in enumerate(part.covariances):
            ea, eb = part.components[a].expr.sql(), part.components[b].expr.sql()
            product = " * ".join(x for x in (ea, eb) if x != "1") or "1"
            select.append(f"sum({_weighted(product, var_weight)}) AS ec{k}")
    where = where_sql(part, query, principal, start, end, "duckdb", by_type=True)
    names = ", ".join(k.rsplit(" AS ", 1)[1] for k in keys)
    return f"SELECT {', '.join(select)} FROM {table} WHERE {where} GROUP BY {names}"


def _compile_quantile(
    part: SqlPart,
    dialect: str,
    query: Query,
    principal: Principal,
    start: datetime,
    end: datetime,
    ci: bool,
    weighted: bool,
    table: str,
) -> str:
    spec = part.quantile
    assert spec is not None
    levels = part.ci_levels() if ci else spec.levels
    value = spec.expr.sql()
    keys = key_columns(part, query, dialect)
    where = where_sql(part, query, principal, start, end, dialect)
    group = ", ".join(f"d{i}" for i in range(len(part.keys)))
    if dialect == "ae":
        select = [*keys, "count() AS _rows", "max(_sample_interval) AS _maxsi"]
        select += [
            f"quantileExactWeighted({q!r})({value}, _sample_interval) AS q{i}"
            for i, q in enumerate(levels)
        ]
        sql = f"SELECT {', '.join(select)} FROM {table} WHERE {where}"
        return sql + (f" GROUP BY {group}" if group else "")
    if not weighted:
        listed = ", ".join(repr(q) for q in levels)
        inner = (
            f"SELECT {', '.join(keys)}{', ' if keys else ''}count(*) AS _rows, "
            f"max(_sample_interval) AS _maxsi, quantile_disc({value}, [{listed}]) AS _ql "
            f"FROM {table} WHERE {where}" + (f" GROUP BY {group}" if group else "")
        )
        picks = ", ".join(f"_ql[{i + 1}] AS q{i}" for i in range(len(levels)))
        outer_keys = "".join(f"d{i}, " for i in range(len(part.keys)))
        return f"SELECT {outer_keys}_rows, _maxsi, {picks} FROM ({inner})"
    # DuckDB: the same rule as ClickHouse's quantileExactWeighted. Sort the distinct values,
    # accumulate their weights, and take the first value whose running weight reaches
    # ceil(total * level).
    partition = f"PARTITION BY {group} " if group else ""
    by = f"{group}, " if group else ""
    picks = ", ".join(
        f"min(v) FILTER (WHERE cw >= ceil(tw * {q!r})) AS q{i}" for i, q in enumerate(levels)
    )
    return (
        f"WITH f AS (SELECT {', '.join([*keys, f'{value} AS v', '_sample_interval AS w'])} "
        f"FROM {table} WHERE {where}), "
        f"g AS (SELECT {by}v, sum(w) AS w, count(*) AS n, max(w) AS m FROM f GROUP BY {by}v), "
        f"c AS (SELECT *, sum(w) OVER ({partition}ORDER BY v ROWS UNBOUNDED PRECEDING) AS cw, "
        f"sum(w) OVER ({partition.strip()}) AS tw FROM g) "
        f"SELECT {by}sum(n) AS _rows, max(m) AS _maxsi, {picks} FROM c"
        + (f" GROUP BY {group}" if group else "")
    )
