"""The fast construction path of the event models must agree with pydantic's own.

``View(...)`` and friends build their field values with validators compiled from each
field's core schema, memoising string results (edgemetrics.events._fast_build); pydantic
validates only what that path defers. These tests hold both to the same answers: for
valid input the same field values and ``model_fields_set``, for invalid input the same
InvalidEvent (field and rule), whatever was memoised before.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from strategies import any_event_dict

from edgemetrics.events import (
    _FAST_BUILDS,
    EVENT_TYPES,
    ApiCall,
    ContentType,
    Event,
    InvalidEvent,
    Purchase,
    View,
    new_event_id,
    utcnow,
)

FIXED_ID = "0123456789abcdef0123456789abcdef"
FIXED_TIME = datetime(2026, 5, 4, 3, 2, 1, 123000, tzinfo=UTC)


def pydantic_only(cls: type[Event], data: dict[str, Any]) -> BaseModel:
    """What pydantic alone makes of ``data`` (the model's own validator, no fast path)."""
    event = cls.__new__(cls)
    BaseModel.__init__(event, **data)
    return event


def outcome(cls: type[Event], data: dict[str, Any]) -> tuple[str, Any]:
    """("ok", field values and fields set) or ("error", (field, rule) pairs)."""
    try:
        event = cls(**data)
    except InvalidEvent as exc:
        return "error", sorted((field, rule) for field, rule, _ in exc.errors)
    return "ok", (dict(event.__dict__), set(event.model_fields_set))


def pydantic_outcome(cls: type[Event], data: dict[str, Any]) -> tuple[str, Any]:
    try:
        event = pydantic_only(cls, data)
    except ValidationError as exc:
        errors = InvalidEvent.from_validation_error(exc).errors
        return "error", sorted((field, rule) for field, rule, _ in errors)
    return "ok", (dict(event.__dict__), set(event.model_fields_set))


def pinned(data: dict[str, Any]) -> dict[str, Any]:
    # Defaults drawn at build time (id, clock) differ between two builds: pin them.
    return {"event_id": FIXED_ID, "timestamp": FIXED_TIME, **data}


def test_the_common_models_take_the_fast_path() -> None:
    # ApiCall has a model validator (min/max from duration): pydantic builds it, and the
    # middleware builds its events without validation anyway (api_calls.py).
    fast = {cls for cls in EVENT_TYPES.values() if cls in _FAST_BUILDS}
    assert fast == set(EVENT_TYPES.values()) - {ApiCall}


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(data=any_event_dict)
def test_valid_events_get_the_same_values_as_pydantic_gives(data: dict[str, Any]) -> None:
    cls = EVENT_TYPES[data["type"]]
    data = pinned(data)
    assert outcome(cls, data) == pydantic_outcome(cls, data)
    assert outcome(cls, data) == pydantic_outcome(cls, data)  # again, from the memo


# Values that break some field's rule, or that pydantic converts (int to float, enum to
# its value, an aware non-UTC time to UTC): the fast path must reach pydantic's answer.
HOSTILE: list[Any] = [
    None, True, False, 0, 1, -1, 7, 10**13, 2**60, 0.5, -0.5, 1e300, math.inf, -math.inf,
    math.nan, "", " ", "x" * 65, "x" * 201, "v1", "V 1", "v1\n", "-v1", "DE", "de", "DEU",
    "EUR", "XXX", "eur", "video", "VIDEO", "mobile", "success", "GET", "get", "/a/{id}",
    "/a?token=1", "ada@example.com", "user@tenant", "10.0.0.1", "2001:db8::1", "12:30:45",
    "+44 20 7946 0958", "4155552671", "https://x.example/?q=1", "Mozilla/5.0 (X11)",
    "1", "2026-05-04T03:02:01Z", "2026-05-04T03:02:01", "ab" * 16, "AB" * 16,
    ContentType.video, datetime(2026, 1, 1),
    datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2))),
    [], {}, b"v1", ("v1",),
]  # fmt: skip


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=any_event_dict,
    changes=st.dictionaries(
        st.sampled_from(sorted({name for m in EVENT_TYPES.values() for name in m.model_fields}))
        | st.just("no_such_field"),
        st.sampled_from(HOSTILE),
        max_size=3,
    ),
    drop=st.sets(st.text(min_size=1, max_size=20), max_size=1),
)
def test_bad_or_converted_values_get_pydantic_answer(
    base: dict[str, Any], changes: dict[str, Any], drop: set[str]
) -> None:
    cls = EVENT_TYPES[base["type"]]
    data = pinned({**base, **changes})
    if "type" in changes:
        data["type"] = base["type"]  # the discriminator picks the class; keep it valid
    for name in list(data)[:1]:
        if name in drop:
            del data[name]
    assert outcome(cls, data) == pydantic_outcome(cls, data)
    assert outcome(cls, data) == pydantic_outcome(cls, data)


def test_a_refused_value_is_refused_every_time_and_a_good_one_is_kept() -> None:
    for _ in range(3):
        with pytest.raises(InvalidEvent) as exc:
            View(content_id="ada@example.com")
        assert exc.value.errors[0][:2] == ("content_id", "pii_email")
    assert View(content_id="v-1").content_id == "v-1"
    with pytest.raises(InvalidEvent) as exc:
        View(content_id="v-1", country="Germany", creator_id="c@x.example")
    assert sorted(e[:2] for e in exc.value.errors) == [
        ("country", "string_pattern_mismatch"),
        ("creator_id", "pii_email"),
    ]


def test_missing_and_unknown_fields_are_named() -> None:
    with pytest.raises(InvalidEvent) as exc:
        Purchase(amount_minor=1, currency="EUR", transaction_id="t", amount=2)
    assert exc.value.errors[0][:2] == ("amount", "extra_forbidden")
    with pytest.raises(InvalidEvent) as exc:
        Purchase(amount_minor=1, currency="EUR")
    assert exc.value.errors[0][:2] == ("transaction_id", "missing")


def test_defaults_are_fresh_ids_and_the_current_millisecond() -> None:
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    a, b = View(content_id="v1"), View(content_id="v1")
    after = datetime.now(UTC)
    assert a.event_id != b.event_id and len(a.event_id) == 32
    assert before <= a.timestamp <= after
    assert a.timestamp.microsecond % 1000 == 0 and a.timestamp.tzinfo is UTC
    assert a.model_fields_set == {"content_id"}
    assert new_event_id() != new_event_id()
    assert utcnow().microsecond % 1000 == 0


def test_fast_built_events_behave_as_models() -> None:
    event = View(content_id="v1", position=3, content_type="video", timestamp=FIXED_TIME)
    assert event.position == 3.0 and isinstance(event.position, float)
    assert event.content_type == "video"
    assert event == pydantic_only(View, {**event.__dict__})
    assert event.model_dump(exclude_unset=True) == {
        "content_id": "v1",
        "position": 3.0,
        "content_type": "video",
        "timestamp": FIXED_TIME,
    }
    with pytest.raises(ValidationError):
        event.position = 4.0  # type: ignore[misc]  # frozen, as every event
    assert event.model_copy(update={"creator_id": "c1"}).creator_id == "c1"


def test_events_built_alike_share_one_fields_set_that_a_copy_never_changes() -> None:
    # One set per call site (a set per event made every garbage collection visit one
    # more container per buffered event); pydantic copies it before changing it.
    a = View(content_id="v1", creator_id="c1")
    b = View(content_id="v2", creator_id="c2")
    assert a.model_fields_set is b.model_fields_set
    c = a.model_copy(update={"position": 5.0})
    assert c.model_fields_set == {"content_id", "creator_id", "position"}
    assert a.model_fields_set == b.model_fields_set == {"content_id", "creator_id"}
    assert View(creator_id="c1", content_id="v1").model_fields_set == a.model_fields_set
