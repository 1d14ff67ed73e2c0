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


def _api_call_records(recorder: Any, route: str, status: int, n: int) -> list[tuple[Any, ...]]:
    import time

    now = time.perf_counter()
    # Starts 0.37 s apart (several seconds and milliseconds), durations of 0, below 0
    # (a clock step) and positive; sizes from 0.
    return [
        (recorder, "GET", route, status, now + 0.37 * i, now + 0.37 * i + (i % 4 - 1) * 1.3e-4,
         i, False, 1)
        for i in range(n)
    ]  # fmt: skip


def test_api_call_records_in_wire_form_say_what_their_models_say() -> None:
    """A batch of one endpoint (written column by column) and a mixed batch (record by
    record) both give, once parsed with the receiver's defaults, the records' models."""
    from edgemetrics.api_calls import ApiCallRecorder

    recorder = ApiCallRecorder(service="shop")
    one_endpoint = _api_call_records(recorder, "/items/<int:id>/100%", 503, 12)
    mixed = one_endpoint[:6] + _api_call_records(recorder, "/other", 200, 6)
    for records in (one_endpoint, mixed):
        texts = recorder.wire_json(records)
        assert len(texts) == len(records)
        sent = [parse_event(orjson.loads(text)) for text in texts]
        built = [recorder.build(record) for record in records]
        assert len({event.event_id for event in sent}) == len(records)
        assert [e.model_dump(exclude={"event_id"}) for e in sent] == [
            e.model_dump(exclude={"event_id"}) for e in built if e is not None
        ]
        assert sent[1].duration_ms == 0.0 and sent[0].duration_ms == 0.0
    # The column-by-column texts are byte for byte the record-by-record ones.
    uniform = recorder.wire_json(one_endpoint)
    recorder._uniform_json = lambda *args: None  # type: ignore[method-assign]
    one_by_one = recorder.wire_json(one_endpoint)
    assert [t.split('"timestamp"')[1] for t in uniform] == [
        t.split('"timestamp"')[1] for t in one_by_one
    ]
