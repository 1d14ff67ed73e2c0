"""Every card and chart of the dashboard, each answered by the query engine on its own.

A card's answer is a small table (:class:`CardData`): typed columns and rows. The browser
draws it as its ``kind`` says (key figures, a line, horizontal bars, a donut or a table);
the CSV export writes the same columns and rows, so a download always matches the screen.
Where the engine says an answer rests on sampled rows, the card is marked ``estimated`` and
each estimated value carries its 95% confidence interval.

>>> sorted({card.section for card in CARDS.values()})
['audience', 'content', 'health', 'item', 'overview', 'revenue']
>>> CARDS["top_countries"].title
'Top 10 countries'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from edgemetrics.dashboard_kit.answers import Runs
from edgemetrics.dashboard_kit.filters import ViewFilters

from edgemetrics.currencies import minor_unit_exponent
from edgemetrics.query import Filter, Principal, Query, Result, TimeRange

Kind = Literal["kpi", "line", "bars", "donut", "table", "curve"]
ColumnKind = Literal[
    "text", "int", "number", "money", "duration", "percent", "ms", "date", "datetime"
]
Titles = Callable[[Iterable[str]], Mapping[str, str]]


@dataclass(frozen=True)
class Column:
    """One column: its key in each row, a descriptive label, how to format it."""

    key: str
    label: str
    kind: ColumnKind = "number"


@dataclass
class CardData:
    """A card's answer: the columns and rows drawn and exported, and how sure they are."""

    columns: list[Column]
    rows: list[dict[str, Any]]
    estimated: bool = False
    row_count: int = 0
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": [c.__dict__ for c in self.columns],
            "rows": self.rows,
            "estimated": self.estimated,
            "row_count": self.row_count,
            "note": self.note,
        }

    def arranged(self, *, search: str = "", sort: str = "") -> CardData:
        """The rows whose title holds ``search`` (any case), ordered by ``sort`` (a column
        key, ``-key`` for descending); ties keep the card's own order.

        >>> d = CardData([Column("title", "Title", "text"), Column("views", "Views", "int")],
        ...              [{"title": "B", "views": 1}, {"title": "a", "views": 5}])
        >>> [r["title"] for r in d.arranged(sort="title").rows]
        ['a', 'B']
        >>> [r["title"] for r in d.arranged(search="b", sort="-views").rows]
        ['B']
        """
        rows = self.rows
        if search:
            needle = search.casefold()
            rows = [r for r in rows if needle in str(r.get("title", "")).casefold()]
        key = sort.lstrip("-")
        column = next((c for c in self.columns if c.key == key), None)
        if column is not None:
            text = column.kind in ("text", "date", "datetime")

            def order(row: dict[str, Any]) -> Any:
                value = row.get(key)
                if text:
                    return str(value or "").casefold()
                return float("-inf") if value is None else float(value)

            rows = sorted(rows, key=order, reverse=sort.startswith("-"))
        return CardData(self.columns, rows, self.estimated, self.row_count, self.note)

    def page(self, number: int, size: int) -> dict[str, Any]:
        """One page of rows as JSON, with the paging facts the table shows."""
        pages = max(1, -(-len(self.rows) // size))
        number = min(max(number, 0), pages - 1)
        out = self.to_json()
        out["rows"] = self.rows[number * size : (number + 1) * size]
        out.update(total_rows=len(self.rows), page=number, pages=pages, page_size=size)
        return out


@dataclass
class Context:
    """What a card is asked for: who asks, with which filters, about which item."""

    engine: Runs
    principal: Principal
    filters: ViewFilters
    titles: Titles
    content_id: str | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    results: list[Result] = field(default_factory=list)

    def run(
        self,
        metrics: Sequence[str],
        dimensions: Sequence[str] = (),
        *,
        time_range: TimeRange | None = None,
        bucket: str | None = None,
        order_by: Sequence[str] = (),
        limit: int = 10_000,
        audience: bool = True,
        rolling: str | None = None,
    ) -> Result:
        """Run one engine query with the viewer's filters (and item, if any) applied.

        ``rolling`` names a ``time_range`` that moves with the clock (the period before
        the selected one, the last 24 hours): the shared answers keep it under
        that name, so the answer a minute ago is served while the moved range is computed,
        instead of every viewer waiting whenever the range moves on."""
        filters: tuple[Filter, ...] = self.filters.query_filters() if audience else ()
        if self.content_id is not None:
            filters += (Filter("content", "eq", self.content_id),)
        query = Query(
            metrics=tuple(metrics),
            dimensions=tuple(dimensions),
            filters=filters,
            time_range=time_range or self.filters.time_range(),
            bucket=bucket,
            order_by=tuple(order_by),
            limit=limit,
        )
        keyed = getattr(self.engine, "run_keyed", None)
        if rolling is not None and keyed is not None:
            named = replace(query, time_range=TimeRange.preset("all")).key()
            result: Result = keyed(query, self.principal, f"{rolling}:{named}")
        else:
            result = self.engine.run(query, self.principal)
        self.results.append(result)
        return result

    def title_of(self, content_ids: Iterable[str]) -> dict[str, str]:
        ids = [c for c in content_ids if c]
        found = dict(self.titles(ids)) if ids else {}
        return {c: found.get(c) or c for c in ids}

    def data(self, columns: list[Column], rows: list[dict[str, Any]], note: str = "") -> CardData:
        """Wrap rows with what the engine said about sampling across this card's queries."""
        return CardData(
            columns,
            rows,
            estimated=any(r.estimated for r in self.results),
            row_count=sum(r.row_count for r in self.results),
            note=note,
        )


Build = Callable[[Context], CardData]


@dataclass(frozen=True)
class Card:
    id: str
    section: str
    title: str
    kind: Kind
    build: Build
    description: str = ""
    wide: bool = False
    # Long tables are sorted, searched and paged by the server: a page is all that travels.
    paged: bool = False

    @property
    def owner_only(self) -> bool:
        return self.section == "health"


CARDS: dict[str, Card] = {}


def card(
    section: str,
    title: str,
    kind: Kind,
    *,
    description: str = "",
    wide: bool = False,
    paged: bool = False,
) -> Callable[[Build], Build]:
    def register(build: Build) -> Build:
        CARDS[build.__name__] = Card(
            build.__name__, section, title, kind, build, description, wide, paged
        )
        return build

    return register


# --- helpers ----------------------------------------------------------------------------


def major(minor: float | None, currency: str) -> float:
    """Minor units (cents) to the currency's major unit."""
    value: float = round(float(minor or 0.0) / 10 ** minor_unit_exponent(currency), 6)
    return value


def _value(row: Any, metric: str) -> float:
    value = row.metrics.get(metric)
    return 0.0 if value is None else float(value)


def _ci(row: Any, metric: str, scale: Callable[[float], float] = float) -> list[float] | None:
    """The interval of an estimated value, or None when the value is exact."""
    interval = row.ci.get(metric)
    if not row.estimated or interval is None:
        return None
    return [scale(interval[0]), scale(interval[1])]


def _change(now: float, before: float | None) -> float | None:
    if before is None or before == 0:
        return None
    return (now - before) / before


def _day_key(moment: Any) -> str:
    return moment.date().isoformat() if isinstance(moment, datetime) else str(moment)[:10]


def _days(ctx: Context, seen: Iterable[str]) -> list[str]:
    """Every day of the period, so quiet days show as zero rather than vanish."""
    resolved = ctx.filters.time_range().resolve()
    assert resolved.start is not None and resolved.end is not None
    seen = sorted(seen)
    first = resolved.start.date()
    if ctx.filters.period == "all":
        if not seen:
            return []
        first = datetime.fromisoformat(seen[0]).date()
    last = (resolved.end - timedelta(microseconds=1)).date()
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _shares(rows: list[dict[str, Any]], key: str, total: float | None = None) -> None:
    total = sum(r[key] for r in rows) if total is None else total
    for r in rows:
        r["share"] = r[key] / total if total else 0.0


def _kpi_columns(kind: ColumnKind, with_previous: bool = True) -> list[Column]:
    cols = [Column("measure", "Measure", "text"), Column("value", "Value", kind)]
    if with_previous:
        cols += [
            Column("previous", "Previous period", kind),
            Column("change", "Change against the previous period", "percent"),
        ]
    return cols


# The Overview's three summed figures come from one query per period: the cards loading in
# parallel ask the same question, and the shared answers run it once.
KPI_METRICS = ("views", "watch_time", "purchases")


def _previous(ctx: Context) -> str:
    """The name of the period before the selected one, for :meth:`Context.run`."""
    return f"previous {ctx.filters.time_range().key()}"


def _kpi_sum(ctx: Context, metric: str, label: str, kind: ColumnKind) -> CardData:
    now = ctx.run(KPI_METRICS).rows[0]
    value = _value(now, metric)
    previous_range = ctx.filters.previous_range(ctx.now)
    before = None
    if previous_range is not None:
        before = _value(
            ctx.run(KPI_METRICS, time_range=previous_range, rolling=_previous(ctx)).rows[0], metric
        )
    row = {
        "measure": label,
        "value": value,
        "value_ci": _ci(now, metric),
        "previous": before,
        "change": _change(value, before),
    }
    return ctx.data(_kpi_columns(kind, previous_range is not None), [row])


def _by_currency(result: Result, metric: str) -> dict[str, tuple[float, Any]]:
    return {r["currency"]: (major(r.metrics[metric], r["currency"]), r) for r in result.rows}


# --- Overview -----------------------------------------------------------------------------


@card("overview", "Views", "kpi")
def kpi_views(ctx: Context) -> CardData:
    return _kpi_sum(ctx, "views", "Views", "int")


@card("overview", "Revenue", "kpi")
def kpi_revenue(ctx: Context) -> CardData:
    now = _by_currency(ctx.run(["revenue"], ["currency"]), "revenue")
    previous_range = ctx.filters.previous_range(ctx.now)
    before: dict[str, tuple[float, Any]] = {}
    if previous_range is not None:
        before = _by_currency(
            ctx.run(["revenue"], ["currency"], time_range=previous_range, rolling=_previous(ctx)),
            "revenue",
        )
    rows = []
    for currency in sorted(set(now) | set(before), key=lambda c: -now.get(c, (0.0, None))[0]):
        value = now.get(currency, (0.0, None))[0]
        prev = before.get(currency, (0.0, None))[0] if previous_range is not None else None
        rows.append(
            {
                "measure": f"Revenue ({currency})",
                "currency": currency,
                "value": value,
                "previous": prev,
                "change": _change(value, prev),
            }
        )
    columns = _kpi_columns("money", previous_range is not None)
    columns.insert(1, Column("currency", "Currency", "text"))
    return ctx.data(columns, rows)


@card("overview", "Purchases", "kpi")
def kpi_purchases(ctx: Context) -> CardData:
    return _kpi_sum(ctx, "purchases", "Purchases", "int")


@card("overview", "Watch time", "kpi")
def kpi_watch_time(ctx: Context) -> CardData:
    return _kpi_sum(ctx, "watch_time", "Watch time (seconds)", "duration")


def _per_day(ctx: Context, metric: str, label: str, kind: ColumnKind) -> CardData:
    result = ctx.run([metric], bucket="day")
    values = {_day_key(r["bucket"]): r for r in result.rows}
    rows = []
    for day in _days(ctx, values):
        r = values.get(day)
        rows.append(
            {
                "day": day,
                metric: _value(r, metric) if r else 0.0,
                f"{metric}_ci": _ci(r, metric) if r else None,
            }
        )
    return ctx.data([Column("day", "Day (UTC)", "date"), Column(metric, label, kind)], rows)


@card("overview", "Views per day", "line", wide=True)
def views_per_day(ctx: Context) -> CardData:
    return _per_day(ctx, "views", "Views", "int")


def _revenue_per_day(ctx: Context) -> CardData:
    result = ctx.run(["revenue"], ["currency"], bucket="day")
    currencies = sorted({r["currency"] for r in result.rows})
    by_day: dict[str, dict[str, float]] = {}
    for r in result.rows:
        by_day.setdefault(_day_key(r["bucket"]), {})[r["currency"]] = major(
            r.metrics["revenue"], r["currency"]
        )
    rows = [
        {"day": day, **{f"revenue_{c}": by_day.get(day, {}).get(c, 0.0) for c in currencies}}
        for day in _days(ctx, by_day)
    ]
    columns = [Column("day", "Day (UTC)", "date")] + [
        Column(f"revenue_{c}", f"Revenue ({c})", "money") for c in currencies
    ]
    return ctx.data(columns, rows)


@card("overview", "Revenue per day", "line", wide=True)
def revenue_per_day(ctx: Context) -> CardData:
    return _revenue_per_day(ctx)


# --- Content ------------------------------------------------------------------------------


@card("content", "Top 10 by views", "bars")
def top_views(ctx: Context) -> CardData:
    top = audience_by_content(ctx).rows[:10]
    titles = ctx.title_of(r["content"] for r in top)
    rows = [
        {
            "title": titles[r["content"]],
            "content": r["content"],
            "views": _value(r, "views"),
            "views_ci": _ci(r, "views"),
        }
        for r in top
    ]
    return ctx.data(
        [
            Column("title", "Title", "text"),
            Column("content", "Content id", "text"),
            Column("views", "Views", "int"),
        ],
        rows,
    )


@card("content", "Top 10 by revenue", "bars")
def top_revenue(ctx: Context) -> CardData:
    top = sales_by_content(ctx).rows[:10]
    titles = ctx.title_of(r["content"] for r in top)
    rows = [
        {
            "title": titles[r["content"]],
            "content": r["content"],
            "currency": r["currency"],
            "revenue": major(r.metrics["revenue"], r["currency"]),
        }
        for r in top
    ]
    return ctx.data(
        [
            Column("title", "Title", "text"),
            Column("content", "Content id", "text"),
            Column("currency", "Currency", "text"),
            Column("revenue", "Revenue", "money"),
        ],
        rows,
    )


# The Content and Revenue sections read two per-item queries between them: the top 10s, the
# content table and revenue by content are cut from the same answers (one run each).
def audience_by_content(ctx: Context) -> Result:
    """Views and watch time per item, most viewed first (the engine's limit: 10,000 items)."""
    return ctx.run(
        ["views", "watch_time", "avg_watch_time"], ["content", "content_type"], order_by=["-views"]
    )


def sales_by_content(ctx: Context) -> Result:
    """Purchases, revenue, refunds and net per item and currency, highest revenue first."""
    return ctx.run(
        ["purchases", "revenue", "refunds", "net_revenue"],
        ["content", "content_type", "currency"],
        order_by=["-revenue"],
    )


def content_rows(ctx: Context) -> list[dict[str, Any]]:
    """One row per content item (per currency if it sold in several)."""
    audience = audience_by_content(ctx)
    sales = sales_by_content(ctx)
    items: dict[str, dict[str, Any]] = {}
    for r in audience.rows:
        items[r["content"]] = {
            "content": r["content"],
            "type": r["content_type"],
            "views": _value(r, "views"),
            "views_ci": _ci(r, "views"),
            "watch_time": _value(r, "watch_time"),
            "watch_time_ci": _ci(r, "watch_time"),
            "avg_watch_time": _value(r, "avg_watch_time"),
        }
    rows: list[dict[str, Any]] = []
    sold: set[str] = set()
    for r in sales.rows:
        base = items.get(r["content"]) or {
            "content": r["content"],
            "type": r["content_type"],
            "views": 0.0,
            "watch_time": 0.0,
            "avg_watch_time": 0.0,
        }
        sold.add(r["content"])
        rows.append(
            {
                **base,
                "currency": r["currency"],
                "purchases": _value(r, "purchases"),
                "revenue": major(r.metrics["revenue"], r["currency"]),
            }
        )
    for content, base in items.items():
        if content not in sold:
            rows.append({**base, "currency": "", "purchases": 0.0, "revenue": 0.0})
    titles = ctx.title_of(row["content"] for row in rows)
    for row in rows:
        row["title"] = titles[row["content"]]
    rows.sort(key=lambda r: (-r["views"], r["title"]))
    return rows


@card(
    "content",
    "All content",
    "table",
    wide=True,
    paged=True,
    description="Sort by any column, search by title, page through.",
)
def content_table(ctx: Context) -> CardData:
    rows = content_rows(ctx)
    return ctx.data(
        [
            Column("title", "Title", "text"),
            Column("content", "Content id", "text"),
            Column("type", "Type", "text"),
            Column("views", "Views", "int"),
            Column("watch_time", "Watch time", "duration"),
            Column("avg_watch_time", "Average watch time per view", "duration"),
            Column("currency", "Currency", "text"),
            Column("revenue", "Revenue", "money"),
            Column("purchases", "Purchases", "int"),
        ],
        rows,
    )


# --- One content item -------------------------------------------------------------------


@card("item", "Key figures", "kpi", wide=True)
def item_kpis(ctx: Context) -> CardData:
    r = ctx.run(
        ["views", "plays", "completions", "completion_rate", "watch_time", "avg_watch_time"]
    ).rows[0]
    sales = ctx.run(["purchases", "revenue"], ["currency"])
    rows: list[dict[str, Any]] = [
        {
            "measure": "Views",
            "value": _value(r, "views"),
            "kind": "int",
            "value_ci": _ci(r, "views"),
        },
        {
            "measure": "Average watch time per view (seconds)",
            "value": _value(r, "avg_watch_time"),
            "kind": "duration",
            "value_ci": _ci(r, "avg_watch_time"),
        },
        {
            "measure": "Completion rate (completions per play)",
            "value": r.metrics.get("completion_rate"),
            "kind": "percent",
            "value_ci": _ci(r, "completion_rate"),
        },
        {"measure": "Plays", "value": _value(r, "plays"), "kind": "int"},
    ]
    for s in sales.rows:
        rows.append(
            {
                "measure": f"Revenue ({s['currency']})",
                "currency": s["currency"],
                "value": major(s.metrics["revenue"], s["currency"]),
                "kind": "money",
            }
        )
        rows.append(
            {
                "measure": f"Purchases ({s['currency']})",
                "value": _value(s, "purchases"),
                "kind": "int",
            }
        )
    return ctx.data(
        [Column("measure", "Measure", "text"), Column("value", "Value", "number")], rows
    )


@card("item", "Views over time", "line", wide=True)
def item_views(ctx: Context) -> CardData:
    return _per_day(ctx, "views", "Views", "int")


@card(
    "item",
    "Abandonment curve",
    "curve",
    description="Share of plays still going at each point of the media, from where viewers left.",
    wide=True,
)
def item_abandonment(ctx: Context) -> CardData:
    metrics = [
        "plays",
        "abandons",
        "completions",
        "abandon_position_p25",
        "abandon_position_p50",
        "abandon_position_p75",
        "abandon_position_p90",
    ]
    r = ctx.run(metrics).rows[0]
    plays, abandons = _value(r, "plays"), _value(r, "abandons")
    rows: list[dict[str, Any]] = []
    if plays:
        rows.append({"position": 0.0, "still_playing": 1.0, "point": "start"})
        for q in (25, 50, 75, 90):
            position = r.metrics.get(f"abandon_position_p{q}")
            if position is not None:
                rows.append(
                    {
                        "position": float(position),
                        "still_playing": max(0.0, 1 - q / 100 * abandons / plays),
                        "point": f"{q}% of abandons happened before here",
                    }
                )
        rows.append(
            {
                "position": None,
                "still_playing": _value(r, "completions") / plays,
                "point": "completed",
            }
        )
    return ctx.data(
        [
            Column("point", "Point", "text"),
            Column("position", "Position (seconds)", "duration"),
            Column("still_playing", "Share of plays still playing", "percent"),
        ],
        rows,
    )


def _breakdown(ctx: Context, dimension: str, label: str, limit: int = 10) -> CardData:
    result = ctx.run(["views"], [dimension], order_by=["-views"], limit=limit)
    total = _value(ctx.run(["views"]).rows[0], "views")
    rows = [
        {
            "name": r[dimension] or "(unknown)",
            "views": _value(r, "views"),
            "views_ci": _ci(r, "views"),
        }
        for r in result.rows
    ]
    _shares(rows, "views", total)
    return ctx.data(
        [
            Column("name", label, "text"),
            Column("views", "Views", "int"),
            Column("share", "Share of views", "percent"),
        ],
        rows,
    )


@card("item", "Countries", "bars")
def item_countries(ctx: Context) -> CardData:
    return _breakdown(ctx, "country", "Country")


@card("item", "Devices", "donut")
def item_devices(ctx: Context) -> CardData:
    return _breakdown(ctx, "device_class", "Device class")


@card("item", "Referrers", "table")
def item_referrers(ctx: Context) -> CardData:
    return _breakdown(ctx, "referrer_source", "Referrer source")


# --- Revenue ------------------------------------------------------------------------------


def _month_start(moment: datetime, back: int = 0) -> datetime:
    year, month = moment.year, moment.month - back
    while month < 1:
        year, month = year - 1, month + 12
    return datetime(year, month, 1, tzinfo=UTC)


@card(
    "revenue",
    "Revenue totals",
    "kpi",
    wide=True,
    description="This month, last month and all time (UTC months), with the other filters.",
)
def revenue_totals(ctx: Context) -> CardData:
    this_month = _month_start(ctx.now)
    ranges = {
        "This month": TimeRange.between(this_month, ctx.now + timedelta(seconds=1)),
        "Last month": TimeRange.between(_month_start(ctx.now, 1), this_month),
        "All time": TimeRange.preset("all"),
    }
    rolling = {"This month": "this_month", "Last month": "last_month", "All time": None}
    rows = []
    for label, time_range in ranges.items():
        result = ctx.run(
            ["purchases", "revenue"], ["currency"], time_range=time_range, rolling=rolling[label]
        )
        for r in result.rows:
            rows.append(
                {
                    "measure": label,
                    "currency": r["currency"],
                    "value": major(r.metrics["revenue"], r["currency"]),
                    "purchases": _value(r, "purchases"),
                }
            )
    return ctx.data(
        [
            Column("measure", "Period", "text"),
            Column("currency", "Currency", "text"),
            Column("value", "Revenue", "money"),
            Column("purchases", "Purchases", "int"),
        ],
        rows,
    )


@card("revenue", "Refunds and net revenue", "table", description="For the selected period.")
def revenue_net(ctx: Context) -> CardData:
    result = ctx.run(["revenue", "refunds", "refund_count", "net_revenue"], ["currency"])
    rows = [
        {
            "currency": r["currency"],
            "revenue": major(r.metrics["revenue"], r["currency"]),
            "refunds": major(r.metrics["refunds"], r["currency"]),
            "refund_count": _value(r, "refund_count"),
            "net": major(r.metrics["net_revenue"], r["currency"]),
        }
        for r in result.rows
    ]
    return ctx.data(
        [
            Column("currency", "Currency", "text"),
            Column("revenue", "Gross revenue", "money"),
            Column("refunds", "Refunded", "money"),
            Column("refund_count", "Refunds", "int"),
            Column("net", "Net revenue", "money"),
        ],
        rows,
    )


@card("revenue", "Revenue over time", "line", wide=True)
def revenue_over_time(ctx: Context) -> CardData:
    return _revenue_per_day(ctx)


@card("revenue", "Revenue by content", "table", wide=True, paged=True)
def revenue_by_content(ctx: Context) -> CardData:
    result = sales_by_content(ctx)
    titles = ctx.title_of(r["content"] for r in result.rows)
    rows = [
        {
            "title": titles[r["content"]],
            "content": r["content"],
            "currency": r["currency"],
            "purchases": _value(r, "purchases"),
            "revenue": major(r.metrics["revenue"], r["currency"]),
            "refunds": major(r.metrics["refunds"], r["currency"]),
            "net": major(r.metrics["net_revenue"], r["currency"]),
        }
        for r in result.rows
    ]
    return ctx.data(
        [
            Column("title", "Title", "text"),
            Column("content", "Content id", "text"),
            Column("currency", "Currency", "text"),
            Column("purchases", "Purchases", "int"),
            Column("revenue", "Gross revenue", "money"),
            Column("refunds", "Refunded", "money"),
            Column("net", "Net revenue", "money"),
        ],
        rows,
    )


@card("revenue", "Revenue by type", "table")
def revenue_by_type(ctx: Context) -> CardData:
    result = ctx.run(["purchases", "revenue"], ["content_type", "currency"], order_by=["-revenue"])
    rows = [
        {
            "type": r["content_type"] or "(unknown)",
            "currency": r["currency"],
            "purchases": _value(r, "purchases"),
            "revenue": major(r.metrics["revenue"], r["currency"]),
        }
        for r in result.rows
    ]
    for currency in {r["currency"] for r in rows}:
        _shares([r for r in rows if r["currency"] == currency], "revenue")
    return ctx.data(
        [
            Column("type", "Content type", "text"),
            Column("currency", "Currency", "text"),
            Column("purchases", "Purchases", "int"),
            Column("revenue", "Revenue", "money"),
            Column("share", "Share of revenue in its currency", "percent"),
        ],
        rows,
    )


# --- Audience -------------------------------------------------------------------------------


@card("audience", "Top 10 countries", "bars")
def top_countries(ctx: Context) -> CardData:
    return _breakdown(ctx, "country", "Country")


@card("audience", "Top cities", "table")
def top_cities(ctx: Context) -> CardData:
    return _breakdown(ctx, "city", "City")


@card("audience", "Devices", "donut")
def devices(ctx: Context) -> CardData:
    return _breakdown(ctx, "device_class", "Device class", limit=20)


@card("audience", "Browsers", "table")
def browsers(ctx: Context) -> CardData:
    return _breakdown(ctx, "browser", "Browser")


@card("audience", "Operating systems", "table")
def operating_systems(ctx: Context) -> CardData:
    return _breakdown(ctx, "os", "Operating system")


@card("audience", "Traffic sources", "table")
def traffic_sources(ctx: Context) -> CardData:
    return _breakdown(ctx, "referrer_source", "Referrer source", limit=50)


@card("audience", "Time zones", "table", description="Where viewers' clocks are: when to publish.")
def timezones(ctx: Context) -> CardData:
    return _breakdown(ctx, "timezone", "Time zone", limit=50)


@card("audience", "Anonymous and authenticated", "donut")
def authenticated_split(ctx: Context) -> CardData:
    return _breakdown(ctx, "authenticated", "Viewer")


# --- Platform health (owner only) ---------------------------------------------------------


def _last_day(ctx: Context) -> TimeRange:
    return TimeRange.between(ctx.now - timedelta(hours=24), ctx.now + timedelta(seconds=1))


@card("health", "Last 24 hours", "kpi", wide=True)
def health_kpis(ctx: Context) -> CardData:
    day = _last_day(ctx)
    api = ctx.run(
        ["avg_response_time", "p95_response_time", "error_rate", "api_calls"],
        time_range=day,
        audience=False,
        rolling="last_24h",
    ).rows[0]
    users = ctx.run(["unique_visitors"], time_range=day, audience=False, rolling="last_24h").rows[0]
    queue = ctx.run(["avg_queue_delay"], time_range=day, audience=False, rolling="last_24h").rows[0]
    rows: list[dict[str, Any]] = [
        {
            "measure": "Average API response time (ms)",
            "value": api.metrics["avg_response_time"],
            "kind": "ms",
        },
        {
            "measure": "95th percentile API response time (ms)",
            "value": api.metrics["p95_response_time"],
            "kind": "ms",
        },
        {
            "measure": "API error rate (5xx share)",
            "value": api.metrics["error_rate"],
            "kind": "percent",
            "value_ci": _ci(api, "error_rate"),
        },
        {
            "measure": "Active users (visitors)",
            "value": _value(users, "unique_visitors"),
            "kind": "int",
            "value_ci": _ci(users, "unique_visitors"),
        },
        {
            "measure": "Average queue delay (ms)",
            "value": queue.metrics["avg_queue_delay"],
            "kind": "ms",
        },
    ]
    return ctx.data(
        [Column("measure", "Measure", "text"), Column("value", "Value", "number")], rows
    )


@card("health", "Response time per hour", "line", wide=True)
def response_time_hourly(ctx: Context) -> CardData:
    bucket = "day" if ctx.filters.period in ("90d", "all") else "hour"
    # The average only: a weighted quantile per hour costs a sort of every call.
    result = ctx.run(["avg_response_time"], bucket=bucket, audience=False)
    rows = [
        {
            "hour": r["bucket"].astimezone(UTC).strftime("%Y-%m-%d %H:00"),
            "avg": r.metrics["avg_response_time"],
        }
        for r in result.rows
    ]
    label = "Hour (UTC)" if bucket == "hour" else "Day (UTC)"
    return ctx.data(
        [
            Column("hour", label, "datetime"),
            Column("avg", "Average response time (ms)", "ms"),
        ],
        rows,
    )


@card("health", "Error rates by endpoint", "table", wide=True)
def errors_by_endpoint(ctx: Context) -> CardData:
    result = ctx.run(
        ["api_calls", "api_errors", "error_rate", "avg_response_time", "p95_response_time"],
        ["endpoint"],
        order_by=["-api_calls"],
        audience=False,
    )
    rows = [
        {
            "endpoint": r["endpoint"],
            "calls": _value(r, "api_calls"),
            "errors": _value(r, "api_errors"),
            "error_rate": r.metrics["error_rate"],
            "error_rate_ci": _ci(r, "error_rate"),
            "avg": r.metrics["avg_response_time"],
            "p95": r.metrics["p95_response_time"],
        }
        for r in result.rows
    ]
    return ctx.data(
        [
            Column("endpoint", "Endpoint", "text"),
            Column("calls", "Requests", "int"),
            Column("errors", "5xx answers", "int"),
            Column("error_rate", "Error rate", "percent"),
            Column("avg", "Average response time (ms)", "ms"),
            Column("p95", "95th percentile (ms)", "ms"),
        ],
        rows,
    )


@card("health", "Background jobs", "table")
def jobs(ctx: Context) -> CardData:
    result = ctx.run(
        ["jobs", "avg_job_duration", "p95_job_duration"],
        ["job_name"],
        order_by=["-jobs"],
        audience=False,
    )
    rows = [
        {
            "job": r["job_name"],
            "runs": _value(r, "jobs"),
            "avg": r.metrics["avg_job_duration"],
            "p95": r.metrics["p95_job_duration"],
        }
        for r in result.rows
    ]
    return ctx.data(
        [
            Column("job", "Job", "text"),
            Column("runs", "Runs", "int"),
            Column("avg", "Average duration (ms)", "ms"),
            Column("p95", "95th percentile (ms)", "ms"),
        ],
        rows,
    )


@card("health", "Queue delays", "table")
def queue_delays(ctx: Context) -> CardData:
    result = ctx.run(
        ["queue_samples", "avg_queue_delay", "p95_queue_delay"],
        ["queue"],
        order_by=["-queue_samples"],
        audience=False,
    )
    rows = [
        {
            "queue": r["queue"],
            "samples": _value(r, "queue_samples"),
            "avg": r.metrics["avg_queue_delay"],
            "p95": r.metrics["p95_queue_delay"],
        }
        for r in result.rows
    ]
    return ctx.data(
        [
            Column("queue", "Queue", "text"),
            Column("samples", "Samples", "int"),
            Column("avg", "Average delay (ms)", "ms"),
            Column("p95", "95th percentile (ms)", "ms"),
        ],
        rows,
    )


@card("health", "Database query times", "table")
def db_queries(ctx: Context) -> CardData:
    result = ctx.run(
        ["db_queries", "avg_db_query_time", "p95_db_query_time"],
        ["operation"],
        order_by=["-db_queries"],
        audience=False,
    )
    rows = [
        {
            "operation": r["operation"],
            "queries": _value(r, "db_queries"),
            "avg": r.metrics["avg_db_query_time"],
            "p95": r.metrics["p95_db_query_time"],
        }
        for r in result.rows
    ]
    return ctx.data(
        [
            Column("operation", "Statement", "text"),
            Column("queries", "Queries", "int"),
            Column("avg", "Average time (ms)", "ms"),
            Column("p95", "95th percentile (ms)", "ms"),
        ],
        rows,
    )


@card(
    "health",
    "Analytics pipeline",
    "table",
    wide=True,
    description="The analytics system's own health: drops, client sampling, spool depth.",
)
def pipeline(ctx: Context) -> CardData:
    result = ctx.run(
        [
            "pipeline_events_in",
            "pipeline_dropped",
            "pipeline_drop_rate",
            "sampling_rate",
            "avg_spool_depth",
        ],
        ["source"],
        audience=False,
    )
    rows = [
        {
            "source": r["source"],
            "events_in": _value(r, "pipeline_events_in"),
            "dropped": _value(r, "pipeline_dropped"),
            "drop_rate": r.metrics["pipeline_drop_rate"],
            "sampling": r.metrics["sampling_rate"],
            "spool": r.metrics["avg_spool_depth"],
        }
        for r in result.rows
    ]
    return ctx.data(
        [
            Column("source", "Source", "text"),
            Column("events_in", "Events captured", "int"),
            Column("dropped", "Events dropped", "int"),
            Column("drop_rate", "Drop rate", "percent"),
            Column("sampling", "Average sample rate", "percent"),
            Column("spool", "Average spool depth (events waiting on disk)", "number"),
        ],
        rows,
    )


SECTIONS: dict[str, str] = {
    "overview": "Overview",
    "content": "Content",
    "revenue": "Revenue",
    "audience": "Audience",
    "health": "Platform health",
}


def section_cards(section: str) -> list[Card]:
    return [c for c in CARDS.values() if c.section == section]
