"""The collector's columnar fast path must agree with the models, event for event."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgemetrics.collector import ingest_events
from edgemetrics.columnar import _PLANS, Columns, encode_batch
from edgemetrics.events import EVENT_TYPES

# Values that are valid for some field somewhere, and values that break some rule.
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    1.0,
    2.5,
    -0.5,
    10**20,
    599,
    600,
    99,
    "",
    "x",
    "v1",
    "c-1",
    "bad id",
    "DE",
    "de",
    "EUR",
    "XXX",
    "ZZZ",
    "video",
    "mobile",
    "success",
    "GET",
    "get",
    "/v1/items/{id}",
    "é" * 70,
    "r" * 201,
    "12",
    "12345",
    "2026-01-01T00:00:00Z",
    "2026-01-01T00:00:00.123456+02:00",
    "2026-01-01T00:00:00",
    "2026-02-30T00:00:00Z",
    "yesterday",
    [],
    {},
    {"a": 1},
    "a" * 32,
    "A" * 32,
]


def _fits(check: Any, value: Any) -> bool:
    try:
        return bool(check(value)) if check is not None else False
    except TypeError:
        return False


@st.composite
def raw_event(draw: st.DrawFn, n: int) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(EVENT_TYPES)))
    model = EVENT_TYPES[kind]
    fields = [f for f in model.model_fields if f not in ("type", "event_id", "timestamp")]
    raw: dict[str, Any] = {"type": kind, "event_id": f"{n:032x}"}
    raw["timestamp"] = draw(
        st.sampled_from(
            [
                "2026-03-01T12:00:00.250Z",
                "2026-03-01T13:00:00+01:00",
                "2026-03-01T12:00:00.123456-05:30",
                "2026-03-01T12:00:00",
            ]
        )
    )
    plan = _PLANS[kind]
    for name in fields:
        choice = draw(st.integers(0, 19))
        if choice < 6:
            continue  # absent: default
        if choice < 9:
            default = model.model_fields[name].default
            raw[name] = getattr(default, "value", default)
        elif choice < 19:
            # A value the field's rule accepts, when the pool has one.
            fitting = [v for v in ODD_VALUES if _fits(plan.checks.get(name), v)]
            raw[name] = draw(st.sampled_from(fitting or ODD_VALUES))
        else:
            raw[name] = draw(st.sampled_from(ODD_VALUES))
    # Required fields are usually present with a plausible value.
    required = {
        "content_id": "v1",
        "amount_minor": 499,
        "currency": "EUR",
        "transaction_id": "tx-1",
        "method": "GET",
        "route": "/v1/x",
        "status_code": 200,
        "duration_ms": 12.5,
        "job_name": "encode",
        "queue": "default",
        "delay_ms": 3.0,
        "fingerprint": "SELECT ?",
        "error_type": "ValueError",
        "source": "exporter",
    }
    for name, value in required.items():
        if name in fields and name not in raw and draw(st.integers(0, 4)) > 0:
            raw[name] = value
    if draw(st.integers(0, 29)) == 0:
        raw["unexpected"] = 1
    return raw


def slow_path(raws: list[Any]) -> tuple[Columns, list[dict[str, Any]]]:
    result = ingest_events(raws)
    out = Columns()
    out.add_points(result.points)
    return out, result.rejected


def by_event_id(columns: Columns) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for dataset in columns.tables:
        table = columns.to_pydict(dataset)
        for i, event_id in enumerate(table["event_id"]):
            rows[event_id] = {"dataset": dataset, **{k: v[i] for k, v in table.items()}}
    return rows


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(0, 10**6), min_size=1, max_size=40).flatmap(
        lambda seeds: st.tuples(*[raw_event(n) for n in range(len(seeds))])
    )
)
def test_fast_and_slow_paths_store_the_same_points_and_reject_the_same_events(
    raws: tuple[dict[str, Any], ...],
) -> None:
    batch = [dict(r) for r in raws]
    fast_columns, fast_rejected = encode_batch([dict(r) for r in batch])
    slow_columns, slow_rejected = slow_path([dict(r) for r in batch])
    assert sorted(r["index"] for r in fast_rejected) == sorted(r["index"] for r in slow_rejected)
    assert sorted(fast_rejected, key=lambda r: r["index"]) == sorted(
        slow_rejected, key=lambda r: r["index"]
    )
    assert by_event_id(fast_columns) == by_event_id(slow_columns)


def test_a_batch_of_one_type_from_the_exporter_takes_the_fast_path_entirely() -> None:
    import orjson

    from edgemetrics.events import View
    from edgemetrics.wire import encode_events

    events = [View(content_id="v1", creator_id="c1", position=n) for n in range(250)]
    raws = orjson.loads(encode_events(events))
    columns, rejected = encode_batch(raws)
    assert rejected == [] and columns.count == 250
    assert by_event_id(columns) == by_event_id(slow_path(raws)[0])


def test_missing_event_id_and_timestamp_are_filled_in() -> None:
    columns, rejected = encode_batch([{"type": "view", "content_id": "v1"}])
    table = columns.to_pydict("edgemetrics_content")
    assert rejected == []
    assert len(table["event_id"][0]) == 32
    assert table["timestamp"][0] > 1_700_000_000_000
    assert table["double2"][0] == float(table["timestamp"][0])
