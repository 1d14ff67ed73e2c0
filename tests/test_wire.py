"""The wire body: only given fields travel, and the receiver's defaults restore the rest."""

from __future__ import annotations

import gzip as stdlib_gzip
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from strategies import any_event_dict

from edgemetrics.events import EVENT_TYPES, Purchase, View, parse_event
from edgemetrics.layout import encode
from edgemetrics.wire import decode_body, encode_body, encode_events, gunzip_body, gzip_body


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=any_event_dict)
def test_an_event_read_back_from_its_short_form_is_the_same_event(data: dict[str, Any]) -> None:
    event = EVENT_TYPES[data["type"]](**data)
    (sent,) = orjson.loads(encode_events([event]))
    if 2 * len(event.model_fields_set) < len(type(event).model_fields):
        assert set(sent) == {"type", "event_id", "timestamp"} | event.model_fields_set
    else:
        assert set(sent) == set(type(event).model_fields)
    again = parse_event(sent)
    assert again == event
    assert encode(again) == encode(event)


def test_defaults_are_left_out_and_given_values_kept_even_when_equal_to_a_default() -> None:
    view = View(content_id="v1", position=0.0, creator_id="c1")
    (sent,) = orjson.loads(encode_events([view]))
    assert sent == {
        "type": "view",
        "event_id": view.event_id,
        "timestamp": view.timestamp.isoformat(),
        "content_id": "v1",
        "creator_id": "c1",
        "position": 0.0,
    }


def test_bodies_are_standard_single_member_gzip_and_round_trip() -> None:
    events = [Purchase(amount_minor=n, currency="EUR", transaction_id=f"t{n}") for n in range(50)]
    body = encode_body("b" * 32, events)
    gz = gzip_body(body)
    assert gz[:3] == b"\x1f\x8b\x08" and gunzip_body(gz) == body
    assert stdlib_gzip.decompress(gz) == body
    batch_id, raw = decode_body(gz, gzipped=True)
    assert batch_id == "b" * 32
    assert [parse_event(item) for item in raw] == events
    assert len(gz) < len(body) / 5
