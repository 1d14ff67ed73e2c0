"""A creator principal reads its own rows only, whatever the query says."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from query_aesim import ChdbBackend, load
from query_data import CREATORS, HOSTILE, T0, point, points, reset

from edgemetrics.query import (
    AccessDenied,
    EmbeddedBackend,
    Engine,
    Filter,
    Principal,
    Query,
    TimeRange,
)
from edgemetrics.query.aggregates import (
    AGG_PREFIX,
    DEFAULT_SPECS,
    Aggregates,
    AggregateSpec,
    TenantRows,
)
from edgemetrics.store import EmbeddedStore

WINDOW = TimeRange.between(T0 - timedelta(days=1), T0 + timedelta(days=30))


# Derived tables built up to here, past every row of the tests' data.
NOW = T0 + timedelta(days=30)
# Owner-only sums, sums kept per tenant, and tenant rows.
SPECS = (
    *DEFAULT_SPECS,
    AggregateSpec("t_audience", "content", ("content", "country"), tenant=True),
    AggregateSpec("o_creators", "content", ("creator", "content", "country"), grain="hour"),
    AggregateSpec("t_sales", "commerce", ("currency",), tenant=True),
)


def derived(store: EmbeddedStore) -> Engine:
    """An engine reading derived tables built from the store's rows as they are now."""
    aggregates = Aggregates(store, SPECS, settle_s=0, branch_rows=0, clock=lambda: NOW)
    aggregates.refresh()
    return Engine(EmbeddedBackend(store), aggregates=aggregates, cache_ttl=0, clock=lambda: NOW)


def engines(store: EmbeddedStore) -> list[Engine]:
    return [
        Engine(EmbeddedBackend(store), cache_ttl=0, aggregates=None),
        Engine(ChdbBackend(), cache_ttl=0),  # type: ignore[arg-type]
        derived(store),
    ]


def _views(creator: str, n: int, **extra: str) -> list:
    return [
        point(
            "content",
            {
                "type": "view",
                "creator_id": creator,
                "content_id": f"{creator}-v",
                "country": "FR",
                **extra,
            },
            T0 + timedelta(minutes=i),
            1,
        )
        for i in range(n)
    ]


@pytest.fixture()
def two_creators(shared_store: EmbeddedStore) -> EmbeddedStore:
    reset(shared_store)
    data = _views("alice", 3) + _views("bob", 5) + _views("alice' OR '1'='1", 7) + _views("", 11)
    data += [
        point(
            "commerce",
            {"type": "purchase", "creator_id": "bob", "amount_minor": 500, "currency": "EUR"},
            T0,
            1,
        )
    ]
    shared_store.write(data)
    load(data)
    return shared_store


ATTEMPTS = [
    Query(("views",), ("creator",), time_range=WINDOW),
    Query(("views",), filters=(Filter("creator", "eq", "bob"),), time_range=WINDOW),
    Query(("views",), filters=(Filter("creator", "in", ("alice", "bob", "")),), time_range=WINDOW),
    Query(("views",), filters=(Filter("creator", "ne", "alice"),), time_range=WINDOW),
    Query(("views",), filters=(Filter("creator", "not_in", ("x",)),), time_range=WINDOW),
    Query(("views",), filters=(Filter("content", "eq", "bob-v"),), time_range=WINDOW),
    Query(("views",), filters=(Filter("country", "eq", "FR' OR '1'='1"),), time_range=WINDOW),
    Query(
        ("views",),
        ("content",),
        filters=(Filter("country", "ne", "') OR (1=1"),),
        time_range=WINDOW,
    ),
]


@pytest.mark.parametrize("query", ATTEMPTS)
def test_creator_sees_only_own_views(two_creators: EmbeddedStore, query: Query) -> None:
    for engine in engines(two_creators):
        alice = engine.run(query, Principal.creator("alice"))
        total = sum(r.metrics["views"] or 0 for r in alice.rows)
        assert total <= 3
        assert alice.row_count <= 3
        for row in alice.rows:
            assert row.dimensions.get("creator", "alice") == "alice"
            assert row.dimensions.get("content", "alice-v") == "alice-v"


def test_crafted_creator_id_is_a_literal(two_creators: EmbeddedStore) -> None:
    q = Query(("views",), time_range=WINDOW)
    for engine in engines(two_creators):
        assert engine.run(q, Principal.creator("alice' OR '1'='1")).value("views") == 7
        assert engine.run(q, Principal.creator("alice\\")).value("views") == 0
        assert engine.run(q, Principal.owner()).value("views") == 26


def test_creator_cannot_read_another_creators_purchases(two_creators: EmbeddedStore) -> None:
    q = Query(
        ("purchases", "revenue"),
        ("currency",),
        time_range=WINDOW,
        filters=(Filter("creator", "eq", "bob"),),
    )
    for engine in engines(two_creators):
        assert engine.run(q, Principal.creator("alice")).rows == []
        assert engine.run(q, Principal.creator("bob")).rows[0].metrics["revenue"] == 500


def test_platform_health_is_owner_only(shared_store: EmbeddedStore) -> None:
    engine = Engine(EmbeddedBackend(shared_store), cache_ttl=0)
    for metrics in (
        ("api_calls",),
        ("p95_response_time",),
        ("pipeline_drop_rate",),
        ("views", "errors"),
    ):
        with pytest.raises(AccessDenied, match="owner"):
            engine.run(Query(metrics, time_range=WINDOW), Principal.creator("alice"))


def test_empty_creator_id_is_refused() -> None:
    for bad in ("", "  "):
        with pytest.raises(ValueError, match="creator_id"):
            Principal.creator(bad)


def test_cache_never_shares_answers_between_scopes(two_creators: EmbeddedStore) -> None:
    engine = Engine(EmbeddedBackend(two_creators), cache_ttl=300)
    q = Query(("views",), time_range=WINDOW)
    assert engine.run(q, Principal.creator("bob")).value("views") == 5
    assert engine.run(q, Principal.creator("alice")).value("views") == 3
    assert engine.run(q, Principal.owner()).value("views") == 26
    again = engine.run(q, Principal.creator("alice"))
    assert again.cached and again.value("views") == 3


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    data=points(),
    creator=st.sampled_from(CREATORS),
    value=st.sampled_from(HOSTILE + CREATORS),
    dim=st.sampled_from(["creator", "content", "country"]),
    op=st.sampled_from(["eq", "ne", "in", "not_in"]),
)
def test_no_filter_widens_a_creator(
    shared_store: EmbeddedStore, data: list, creator: str, value: str, dim: str, op: str
) -> None:
    if not creator.strip():
        return
    reset(shared_store)
    shared_store.write(data)
    load(data)
    own = sum(
        p.sample_interval
        for p in data
        if p.dataset == "edgemetrics_content" and p.blobs[0] == "view" and p.index1 == creator
    )
    flt = Filter(dim, op, value if op in ("eq", "ne") else (value, "c2"))
    q = Query(("views",), ("creator",), filters=(flt,), time_range=WINDOW)
    for engine in engines(shared_store):
        result = engine.run(q, Principal.creator(creator))
        assert all(r.dimensions["creator"] == creator for r in result.rows)
        assert sum(r.metrics["views"] or 0 for r in result.rows) <= own


def test_a_creator_reads_derived_tables_only_through_the_tenancy_condition(
    two_creators: EmbeddedStore,
) -> None:
    """Every statement a creator's query runs on derived tables names only tables that keep
    the tenant, and carries the same tenancy condition as on raw rows."""
    engine = derived(two_creators)
    tenant_kept = {s.table for s in SPECS if s.tenant}
    owner_only = {s.table for s in SPECS if not s.tenant}
    used: set[str] = set()
    queries = [
        *ATTEMPTS,
        Query(("views", "purchases"), time_range=WINDOW),
        Query(
            ("revenue",),
            ("currency",),
            filters=(Filter("creator", "eq", "bob"),),
            time_range=WINDOW,
        ),
        Query(("views",), ("country",), bucket="day", time_range=WINDOW),
        Query(("abandon_position_p50",), ("content",), time_range=WINDOW),
    ]
    for q in queries:
        result = engine.run(q, Principal.creator("alice"))
        for sql in result.sql:
            tables = set(re.findall(rf"\b{AGG_PREFIX}[a-z0-9_]+", sql))
            assert not tables & owner_only, sql
            used |= tables
            if tables:
                assert (
                    "(tenant = 'alice' AND creator = 'alice')" in sql
                    or "(index1 = 'alice' AND blob4 = 'alice')" in sql
                ), sql
    assert used & tenant_kept  # the derived path was taken
    assert any(isinstance(s, TenantRows) and s.table in used for s in SPECS)


def test_rows_indexed_to_one_creator_and_attributed_to_another_reach_neither(
    shared_store: EmbeddedStore,
) -> None:
    reset(shared_store)
    crafted = point(
        "content",
        {"type": "view", "creator_id": "bob", "content_id": "x", "country": "FR"},
        T0,
        1,
    )
    shared_store.write([dataclasses.replace(crafted, index1="alice")])
    engine = derived(shared_store)
    q = Query(("views",), ("country",), time_range=WINDOW)
    for who in ("alice", "bob"):
        assert engine.run(q, Principal.creator(who)).rows == []
    assert engine.run(q, Principal.owner()).rows[0]["views"] == 1
