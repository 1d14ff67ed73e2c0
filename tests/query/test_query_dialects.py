"""The same query, compiled to AE SQL (run on ClickHouse via chdb) and to DuckDB SQL (run on
the embedded store), gives the same answer on the same random data."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from query_aesim import ChdbBackend, load
from query_compare import queries, same
from query_data import points, reset

from edgemetrics.query import EmbeddedBackend, Engine, Principal, Query
from edgemetrics.store import EmbeddedStore


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=points(), qs=st.lists(queries(), min_size=1, max_size=4))
def test_ae_on_clickhouse_equals_duckdb(
    shared_store: EmbeddedStore, data: list[Any], qs: list[tuple[Query, Principal]]
) -> None:
    reset(shared_store)
    shared_store.write(data)
    load(data)
    duck = Engine(EmbeddedBackend(shared_store), cache_ttl=0)
    ae = Engine(ChdbBackend(), cache_ttl=0)  # type: ignore[arg-type]
    for query, principal in qs:
        same(ae.run(query, principal), duck.run(query, principal))
