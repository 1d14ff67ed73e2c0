"""The collector's columnar fast path must agree with the models, event for event."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic_core import PydanticUndefined

from edgemetrics.collector import ingest_events
from edgemetrics.columnar import _PLANS, Columns, decode_batch, encode_batch
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
    -0.0,
    10**20,
    2**63,
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


# --- the first tier: decode_batch over a whole body -------------------------------------


def exact(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Rows with each value's repr: 0.0 and -0.0, 1 and 1.0 and True stay apart."""
    return {k: {name: repr(v) for name, v in row.items()} for k, row in rows.items()}


def body_of(raws: list[Any]) -> bytes:
    # The standard library writes integers of any size, as a sender may.
    return json.dumps({"batch_id": "f" * 32, "events": raws}).encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(0, 10**6), min_size=1, max_size=40).flatmap(
        lambda seeds: st.tuples(*[raw_event(n) for n in range(len(seeds))])
    )
)
def test_the_first_tier_answers_only_valid_bodies_and_stores_what_the_models_store(
    raws: tuple[dict[str, Any], ...],
) -> None:
    # A JSON body cannot say "no default" (the strategy's stand-in for a missing value).
    events = [{k: v for k, v in r.items() if v is not PydanticUndefined} for r in raws]
    # Each event alone (most are valid, so the first tier answers), then the whole batch.
    for batch in [[dict(r)] for r in events] + [[dict(r) for r in events]]:
        body = body_of(batch)
        answer = decode_batch(body)
        # What the collector's second tier gets: the body as orjson reads it.
        slow_columns, slow_rejected = slow_path(orjson.loads(body)["events"])
        if answer is None:
            continue
        batch_id, columns = answer
        assert batch_id == "f" * 32
        assert slow_rejected == [], "the first tier accepted an event the models reject"
        assert exact(by_event_id(columns)) == exact(by_event_id(slow_columns))


def test_an_exporter_body_takes_the_first_tier() -> None:
    from edgemetrics.events import ApiCall, Purchase, View
    from edgemetrics.wire import encode_body

    events = [View(content_id="v1", creator_id=f"c{n % 3}", position=n) for n in range(200)]
    events += [Purchase(amount_minor=499, currency="EUR", transaction_id="t1")]
    events += [
        ApiCall(service="app", method="GET", route="/v1/x", status_code=200, duration_ms=3.5)
    ]
    answer = decode_batch(encode_body("e" * 32, events))
    assert answer is not None
    columns = answer[1]
    assert columns.count == 202
    assert sorted(columns.tables) == [
        "edgemetrics_commerce",
        "edgemetrics_content",
        "edgemetrics_platform",
    ]
    import orjson

    slow, rejected = slow_path(orjson.loads(encode_body("e" * 32, events))["events"])
    assert rejected == []
    assert exact(by_event_id(columns)) == exact(by_event_id(slow))


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"batch_id": "nothex", "events": []}',
        b'{"batch_id": "' + b"a" * 32 + b'", "events": [], "extra": 1}',
        # Anything the second tier would answer with a rejection or coerce:
        b'{"batch_id": "' + b"a" * 32 + b'", "events": [{"type": "view", "content_id": 5}]}',
        b'{"batch_id": "' + b"a" * 32 + b'", "events": [{"type": "telepathy"}]}',
        b'{"batch_id": "' + b"a" * 32 + b'", "events": [{"type": "view"}]}',
        b'{"batch_id": "' + b"a" * 32 + b'", "events": [{"type": "view", "content_id": "v",'
        b' "blob": 1}]}',
        b'{"batch_id": "' + b"a" * 32 + b'", "events": [{"type": "view", "content_id": "v",'
        b' "timestamp": "2026-01-01T00:00:00"}]}',
        b'{"batch_id": "' + b"a" * 32 + b'", "events": [{"type": "purchase", "amount_minor":'
        b' 10000000000000000000, "currency": "EUR", "transaction_id": "t"}]}',
        b'{"batch_id": "' + b"a" * 32 + b'", "events": [{"type": "view", "content_id": "v",'
        b' "authenticated": 1}]}',
        b'{"batch_id": "' + b"a" * 32 + b'", "events": [{"type": "view", "content_id": "v",'
        b' "user_id": "jo@example.com"}]}',
        b'{"batch_id": "' + b"a" * 32 + b'", "events": [{"type": "view", "content_id": "v",'
        b' "type": "pause"}]}',
    ],
)
def test_the_first_tier_leaves_every_doubtful_body_to_the_second(body: bytes) -> None:
    assert decode_batch(body) is None


def test_first_tier_details_match_the_models() -> None:
    import orjson

    raws = [
        # Duplicate keys: the last one counts, as orjson reads it.
        b'{"type": "view", "content_id": "v1", "content_id": "v2", "event_id": "'
        + b"1" * 32
        + b'"}',
        # -0.0 is kept as it is; an integer where a number is expected is a float.
        b'{"type": "view", "content_id": "v", "position": -0.0, "media_duration": 3,'
        b' "event_id": "' + b"2" * 32 + b'"}',
        # No event id: a fresh one, as the model's default gives.
        b'{"type": "view", "content_id": "v", "timestamp": "2026-03-01T12:00:00.123456+01:00"}',
    ]
    body = b'{"batch_id": "' + b"a" * 32 + b'", "events": [' + b",".join(raws) + b"]}"
    answer = decode_batch(body)
    assert answer is not None
    table = answer[1].to_pydict("edgemetrics_content")
    slow, _ = slow_path(orjson.loads(body)["events"])
    expected = slow.to_pydict("edgemetrics_content")
    assert table["blob2"] == expected["blob2"] == ["v2", "v", "v"]
    assert repr(table["double4"][1]) == "-0.0" and table["double5"][1] == 3.0
    assert len(table["event_id"][2]) == 32 and table["event_id"][2] != expected["event_id"][2]
    assert table["timestamp"][2] == expected["timestamp"][2]
