"""Hostile values stay literals: the SQL stays valid and a filter matches exactly the value,
in AE SQL (run on ClickHouse) and in DuckDB SQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from query_aesim import ChdbBackend, load
from query_data import HOSTILE, T0, point, reset

from edgemetrics.query import (
    EmbeddedBackend,
    Engine,
    Filter,
    Principal,
    Query,
    QueryError,
    TimeRange,
)
from edgemetrics.query.compiler import literal
from edgemetrics.store import EmbeddedStore

WINDOW = TimeRange.between(T0 - timedelta(days=1), T0 + timedelta(days=1))
PIECES = [
    "'",
    "''",
    "\\",
    "\\'",
    "\x00",
    "--",
    "/*",
    "*/",
    '"',
    "\n",
    ";",
    "%",
    "_",
    "é",
    "🙂",
    "\u202e",
    "\\0",
    "\\n",
    "0x",
    " OR 1=1",
]
hostile = st.lists(
    st.one_of(st.sampled_from(PIECES), st.text(st.characters(codec="utf-8"), max_size=3)),
    max_size=5,
).map("".join)


def _view(country: str, creator: str, minute: int):  # type: ignore[no-untyped-def]
    return point(
        "content",
        {"type": "view", "creator_id": creator, "content_id": "v", "country": country},
        T0 + timedelta(minutes=minute),
        1,
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(target=hostile, others=st.lists(hostile, max_size=6), creator=hostile)
def test_filter_matches_exactly_the_literal(
    shared_store: EmbeddedStore, target: str, others: list[str], creator: str
) -> None:
    # Near misses of the target: what a broken escaper would also match.
    decoys = [
        *others,
        target + "'",
        target.replace("\\", ""),
        target.replace("'", "''"),
        target.replace("\x00", ""),
        target.upper(),
        target + " ",
    ]
    data = [_view(target, creator, i) for i in range(3)]
    data += [_view(d, creator, 10 + i) for i, d in enumerate(decoys)]
    reset(shared_store)
    shared_store.write(data)
    load(data)
    expected = sum(1 for p in data if p.blobs[6] == target)
    rest = len(data) - expected
    for engine in (
        Engine(EmbeddedBackend(shared_store), cache_ttl=0),
        Engine(ChdbBackend(), cache_ttl=0),
    ):  # type: ignore[arg-type]
        eq = Query(("views",), filters=(Filter("country", "eq", target),), time_range=WINDOW)
        assert engine.run(eq, Principal.owner()).value("views") == expected
        ne = Query(("views",), filters=(Filter("country", "ne", target),), time_range=WINDOW)
        assert engine.run(ne, Principal.owner()).value("views") == rest
        mine = engine.run(eq, Principal.creator(creator)) if creator.strip() else None
        if mine is not None:
            assert mine.value("views") == expected
        grouped = engine.run(Query(("views",), ("country",), time_range=WINDOW), Principal.owner())
        assert {r.dimensions["country"]: r.metrics["views"] for r in grouped.rows}[
            target
        ] == expected


@pytest.mark.parametrize("value", HOSTILE)
def test_literals_round_trip_in_both_engines(value: str) -> None:
    import duckdb
    from query_aesim import run_ae

    assert run_ae(f"SELECT {literal(value, 'ae')} AS v")[0]["v"] == value
    assert duckdb.sql(f"SELECT {literal(value, 'duckdb')} AS v").fetchall()[0][0] == value


def test_unencodable_values_are_refused() -> None:
    with pytest.raises(QueryError, match="utf8"):
        Filter("country", "eq", "\ud800")
    with pytest.raises(QueryError, match="no_nul"):
        literal("a\x00", "postgres")


def test_unknown_names_never_reach_sql() -> None:
    for bad in ("views; DROP TABLE x", "blob1", "count(*)"):
        with pytest.raises(QueryError, match="semantic_layer"):
            Engine(ChdbBackend(), cache_ttl=0).run(
                Query((bad,), time_range=WINDOW), Principal.owner()
            )  # type: ignore[arg-type]
        with pytest.raises(QueryError, match="semantic_layer"):
            Engine(ChdbBackend(), cache_ttl=0).run(  # type: ignore[arg-type]
                Query(("views",), (bad,), time_range=WINDOW), Principal.owner()
            )
        with pytest.raises(QueryError, match="semantic_layer"):
            Engine(ChdbBackend(), cache_ttl=0).run(  # type: ignore[arg-type]
                Query(("views",), filters=(Filter(bad, "eq", "x"),), time_range=WINDOW),
                Principal.owner(),
            )
