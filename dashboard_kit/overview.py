"""The Overview's queries over the embedded store: four cards and two daily series.

Counts and sums are weighted by ``_sample_interval`` (AE's rule), so the same SQL stays
right on sampled data. Column names come from the AE layout, never hand-written.

>>> import tempfile, os
>>> from edgemetrics.store import EmbeddedStore
>>> store = EmbeddedStore(os.path.join(tempfile.mkdtemp(), "em.duckdb"))
>>> overview(store, days=30)["cards"]["views"]
0.0
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from edgemetrics.layout import columns, dataset_name
from edgemetrics.store import EmbeddedStore

CONTENT = dataset_name("content")
COMMERCE = dataset_name("commerce")
_C = columns("content")
_M = columns("commerce")


def _scope(column: str, creator_id: str | None) -> tuple[str, list[Any]]:
    if creator_id is None:
        return "", []
    return f" AND {column} = ?", [creator_id]


def overview(
    store: EmbeddedStore,
    *,
    days: int = 30,
    creator_id: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Cards (views, watch time, purchases, revenue per currency) and daily series.

    ``creator_id`` confines every number to one creator's content.
    """
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    # Whole UTC days: today and the days - 1 before it.
    start = datetime.combine(today - timedelta(days=days - 1), datetime.min.time())
    end = datetime.combine(today + timedelta(days=1), datetime.min.time())
    content_scope, content_args = _scope(_C["creator_id"], creator_id)
    commerce_scope, commerce_args = _scope(_M["creator_id"], creator_id)
    window = "timestamp >= ? AND timestamp < ?"

    content = store.query(
        f"SELECT "
        f"sum(CASE WHEN {_C['type']} = 'view' THEN _sample_interval ELSE 0 END) AS views, "
        f"sum({_C['watch_time']} * _sample_interval) AS watch_time "
        f"FROM {CONTENT} WHERE {window}{content_scope}",
        [start, end, *content_args],
    )[0]
    commerce = store.query(
        f"SELECT {_M['currency']} AS currency, "
        f"sum(_sample_interval) AS purchases, "
        f"sum({_M['amount_minor']} * _sample_interval) AS revenue_minor "
        f"FROM {COMMERCE} WHERE {window} AND {_M['type']} = 'purchase'{commerce_scope} "
        f"GROUP BY 1 ORDER BY revenue_minor DESC",
        [start, end, *commerce_args],
    )
    views_per_day = store.query(
        f"SELECT CAST(timestamp AS DATE) AS day, sum(_sample_interval) AS views "
        f"FROM {CONTENT} WHERE {window} AND {_C['type']} = 'view'{content_scope} "
        f"GROUP BY 1 ORDER BY 1",
        [start, end, *content_args],
    )
    revenue_per_day = store.query(
        f"SELECT CAST(timestamp AS DATE) AS day, {_M['currency']} AS currency, "
        f"sum({_M['amount_minor']} * _sample_interval) AS revenue_minor "
        f"FROM {COMMERCE} WHERE {window} AND {_M['type']} = 'purchase'{commerce_scope} "
        f"GROUP BY 1, 2 ORDER BY 1",
        [start, end, *commerce_args],
    )
    days_list = [start.date() + timedelta(days=i) for i in range(days)]
    return {
        "range": {"start": start.date().isoformat(), "end": today.isoformat(), "days": days},
        "cards": {
            "views": float(content["views"] or 0),
            "watch_time_seconds": float(content["watch_time"] or 0),
            "purchases": float(sum(row["purchases"] for row in commerce)),
            "revenue_minor": {row["currency"]: int(row["revenue_minor"]) for row in commerce},
        },
        "series": {
            "views_per_day": _fill(days_list, {r["day"]: float(r["views"]) for r in views_per_day}),
            "revenue_per_day": {
                currency: _fill(
                    days_list,
                    {
                        r["day"]: int(r["revenue_minor"])
                        for r in revenue_per_day
                        if r["currency"] == currency
                    },
                )
                for currency in sorted({r["currency"] for r in revenue_per_day})
            },
        },
    }


def _fill(days: list[date], values: dict[date, float]) -> list[dict[str, Any]]:
    return [{"day": d.isoformat(), "value": values.get(d, 0)} for d in days]
