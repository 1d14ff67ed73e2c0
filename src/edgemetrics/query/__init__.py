"""The query layer: one semantic model, compiled to AE SQL or DuckDB SQL, answered with
row counts and 95% confidence intervals, per principal, cached.

The dashboard's API::

    Engine(backend, rollups=None, cache_ttl=30).run(query, principal) -> Result

A runnable example on the embedded store:

>>> import os, tempfile
>>> from datetime import UTC, datetime
>>> from edgemetrics.events import View
>>> from edgemetrics.layout import encode
>>> from edgemetrics.store import EmbeddedStore
>>> from edgemetrics.query import EmbeddedBackend, Engine, Filter, Principal, Query, TimeRange
>>> store = EmbeddedStore(os.path.join(tempfile.mkdtemp(), "em.duckdb"))
>>> _ = store.write([encode(View(content_id="v1", creator_id="c1", country="FR")),
...                  encode(View(content_id="v2", creator_id="c1", country="DE")),
...                  encode(View(content_id="v3", creator_id="c2", country="FR"))])
>>> engine = Engine(EmbeddedBackend(store))
>>> q = Query(metrics=("views",), dimensions=("country",), time_range=TimeRange.preset("today"))
>>> [(r["country"], r["views"]) for r in engine.run(q, Principal.owner()).rows]
[('FR', 2.0), ('DE', 1.0)]
>>> result = engine.run(q, Principal.creator("c2"))
>>> [(r["country"], r["views"]) for r in result.rows], result.row_count, result.estimated
([('FR', 1.0)], 1, False)
>>> result.rows[0].ci["views"]
(1.0, 1.0)
>>> q7 = Query(("views", "unique_views"), bucket="day", tz="Europe/Paris",
...            filters=(Filter("country", "eq", "FR"),),
...            time_range=TimeRange.preset("7d", tz="Europe/Paris"))
>>> engine.run(q7, Principal.owner()).rows[-1]["views"]
2.0
>>> store.close()

Pieces: :mod:`.model` (Query, Filter, TimeRange, Principal), :mod:`.semantic` (the metric
and dimension catalogue), :mod:`.compiler` (AE and DuckDB SQL), :mod:`.backends`
(Cloudflare SQL API, embedded DuckDB), :mod:`.result` (merging, intervals),
:mod:`.rollup` (daily rollups in DuckDB or PostgreSQL, ``edgemetrics rollup``),
:mod:`.aggregates` (derived tables the embedded store keeps and the engine reads where
they hold an answer), :mod:`.cache`; retention is :mod:`edgemetrics.retention`.

Purchases and revenue are exact: the commerce dataset is indexed by creator id and its
volume stays far below the rate at which AE starts sampling an index, so every purchase is
one row with ``_sample_interval = 1``; the answer still checks. If any row it rests on had
a sample interval above 1, ``estimated`` is true and the interval is a real one.
"""

from edgemetrics.principal import Principal
from edgemetrics.query.backends import (
    BackendAuthError,
    BackendError,
    BackendQueryError,
    BackendTimeout,
    BackendUnavailable,
    CloudflareBackend,
    EmbeddedBackend,
)
from edgemetrics.query.engine import Engine
from edgemetrics.query.model import AccessDenied, Filter, Query, QueryError, TimeRange
from edgemetrics.query.result import Result, ResultRow
from edgemetrics.query.semantic import DIMENSIONS, METRICS

__all__ = [
    "DIMENSIONS",
    "METRICS",
    "AccessDenied",
    "BackendAuthError",
    "BackendError",
    "BackendQueryError",
    "BackendTimeout",
    "BackendUnavailable",
    "CloudflareBackend",
    "EmbeddedBackend",
    "Engine",
    "Filter",
    "Principal",
    "Query",
    "QueryError",
    "Result",
    "ResultRow",
    "TimeRange",
]
