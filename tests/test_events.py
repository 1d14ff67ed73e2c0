"""Event validation: every bad field gets an error naming the field and the rule."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from edgemetrics.events import (
    EVENT_TYPES,
    ApiCall,
    InvalidEvent,
    Purchase,
    View,
    parse_event,
)


@pytest.mark.parametrize(
    ("data", "field", "rule"),
    [
        (
            {"type": "purchase", "amount_minor": -5, "currency": "EUR", "transaction_id": "t"},
            "amount_minor",
            "greater_than_equal",
        ),
        (
            {"type": "purchase", "amount_minor": 5, "currency": "EUX", "transaction_id": "t"},
            "currency",
            "value_error",
        ),
        (
            {"type": "purchase", "amount_minor": 5, "currency": "eur", "transaction_id": "t"},
            "currency",
            "string_pattern_mismatch",
        ),
        ({"type": "purchase", "amount_minor": 5, "currency": "EUR"}, "transaction_id", "missing"),
        (
            {"type": "view", "content_id": "bad id with spaces"},
            "content_id",
            "string_pattern_mismatch",
        ),
        (
            {"type": "view", "content_id": "v1", "country": "Germany"},
            "country",
            "string_pattern_mismatch",
        ),
        ({"type": "view", "content_id": "v1", "device_class": "fridge"}, "device_class", "enum"),
        ({"type": "view", "content_id": "v1", "position": -1}, "position", "greater_than_equal"),
        ({"type": "view", "content_id": "v1", "email": "a@b.c"}, "email", "extra_forbidden"),
        (
            {"type": "view", "content_id": "v1", "timestamp": "2026-01-01T00:00:00"},
            "timestamp",
            "value_error",
        ),
        (
            {
                "type": "api_call",
                "method": "GET",
                "route": "/",
                "status_code": 700,
                "duration_ms": 1,
            },
            "status_code",
            "less_than_equal",
        ),
        ({"type": "job", "job_name": "x", "duration_ms": 1, "outcome": "maybe"}, "outcome", "enum"),
        ({"type": "teleport"}, "type", "enum"),
    ],
)
def test_bad_fields_are_named_with_their_rule(data: dict, field: str, rule: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(data)
    assert (field, rule) in [(f, r) for f, r, _ in info.value.errors]
    assert field in str(info.value)


def test_constructing_a_model_directly_raises_the_same_error() -> None:
    with pytest.raises(InvalidEvent, match="amount_minor"):
        Purchase(amount_minor=-1, currency="EUR", transaction_id="t")


def test_non_object_input_is_rejected_clearly() -> None:
    with pytest.raises(InvalidEvent, match="JSON object"):
        parse_event(["view"])  # type: ignore[arg-type]


def test_timestamps_are_utc_with_millisecond_precision() -> None:
    local = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    event = View(content_id="v1", timestamp=local)
    assert event.timestamp.utcoffset() == timedelta(0)
    assert event.timestamp.hour == 10 and event.timestamp.microsecond == 123000


def test_every_type_has_a_family_and_a_unique_default_id() -> None:
    assert {m.family for m in EVENT_TYPES.values()} == {
        "content",
        "commerce",
        "platform",
        "pipeline",
    }
    assert View(content_id="a").event_id != View(content_id="a").event_id


def test_a_single_request_has_min_and_max_equal_to_its_duration() -> None:
    call = ApiCall(method="GET", route="/x", status_code=200, duration_ms=4.5)
    assert call.duration_min_ms == call.duration_max_ms == 4.5
    assert call.calls == 1
