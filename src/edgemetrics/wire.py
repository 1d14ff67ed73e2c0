"""The batch body on the wire: ``{"batch_id": ..., "events": [...]}``, JSON, usually gzipped.

Serialisation happens on the exporter thread, never the caller's. Events are written
from their validated field values with orjson (datetimes as RFC 3339, enums as their
values), which is what ``Event.model_dump(mode="json")`` describes, at a fraction of the
cost. When an event was given fewer than half its fields (a ``View(content_id=...)``),
only those travel, with ``type``, ``event_id`` and ``timestamp`` always: the protocol
fills every absent optional field with its default (docs/ingest-protocol.md), so a field
left at its default needs no bytes, no compression and no parsing at the receiver. An
event given most of its fields is sent whole, which is cheaper than picking them out.
Bodies are gzipped by ISA-L (``isal``), several times faster than zlib at a better ratio,
in the same RFC 1952 format.

>>> from edgemetrics.events import View
>>> body = encode_body("0" * 32, [View(content_id="v1", event_id="a" * 32)])
>>> batch_id, events = decode_body(gzip_body(body), gzipped=True)
>>> batch_id, events[0]["content_id"], events[0]["event_id"] == "a" * 32
('00000000000000000000000000000000', 'v1', True)
>>> sorted(events[0])  # the defaults (position 0.0, creator_id None, ...) stay home
['content_id', 'event_id', 'timestamp', 'type']
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, cast

import orjson
from isal import isal_zlib

from edgemetrics.events import Event

# The protocol's limits (docs/ingest-protocol.md).
MAX_SENT_BYTES = 1024 * 1024
MAX_DECOMPRESSED_BYTES = 5 * 1024 * 1024
MAX_EVENTS_PER_BODY = 5000
# The local collector's answers say how many events it takes in one request; the Worker's
# do not (it keeps AE's 250), and then the exporter sends 250 at most (Client.batch_size).
MAX_EVENTS_HEADER = "X-Edgemetrics-Max-Events"
# ISA-L's levels run 0 to 3; at 1 these repetitive JSON bodies shrink ~15x (more than
# zlib's level 1 gets) at a sixth of zlib's CPU.
GZIP_LEVEL = 1


# An event already in its wire form: the JSON text of its object (RawBuilder.wire_json
# writes them for the middleware's records, with no model in between).
WireEvent = str
_ONLY_TEXTS = {str}


class BodyTooLarge(ValueError):
    """A body over the protocol's size limit."""


def encode_events(events: Sequence[Event | WireEvent]) -> bytes:
    """The JSON array of the events: each one's type, id, time and the fields it was given
    (an event already in wire form goes as it is).

    >>> from edgemetrics.events import View
    >>> encode_events(['{"type":"view","content_id":"v0"}', View(content_id="v1")])[:40]
    b'[{"type":"view","content_id":"v0"},{"typ'
    """
    if set(map(type, events)) == _ONLY_TEXTS:
        return encode_texts(cast(Sequence[str], events))
    pieces: list[bytes] = []
    texts: list[str] = []
    models: list[dict[str, Any]] = []
    for event in events:
        if type(event) is str:
            if models:
                pieces.append(orjson.dumps(models)[1:-1])
                models = []
            texts.append(event)
            continue
        if texts:
            pieces.append(",".join(texts).encode())
            texts = []
        assert isinstance(event, Event)
        values = event.__dict__
        given = event.__pydantic_fields_set__
        if 2 * len(given) >= len(values):
            # Most fields given: picking them out would cost more than the few defaults
            # weigh. All values are valid on the wire.
            models.append(values)
            continue
        item = {
            "type": values["type"],
            "event_id": values["event_id"],
            "timestamp": values["timestamp"],
        }
        for name in given:
            item[name] = values[name]
        models.append(item)
    if texts:
        pieces.append(",".join(texts).encode())
    if models:
        if not pieces:
            return orjson.dumps(models)
        pieces.append(orjson.dumps(models)[1:-1])
    return b"[" + b",".join(pieces) + b"]"


def encode_texts(texts: Sequence[WireEvent]) -> bytes:
    """The JSON array of events all in wire form (an API's requests): one join, with the
    brackets around it ("[" + array + "]" without copying the array twice).

    >>> encode_texts(['{"type":"view"}', '{"type":"like"}'])
    b'[{"type":"view"},{"type":"like"}]'
    """
    return ",".join(texts).join(("[", "]")).encode()


def encode_body(batch_id: str, events: Sequence[Event | WireEvent] | bytes) -> bytes:
    """The uncompressed JSON body; ``events`` may be an already encoded JSON array."""
    array = events if isinstance(events, bytes) else encode_events(events)
    # One join: the array (a few hundred KiB) is copied once, not once per "+".
    return b"".join((b'{"batch_id":"', batch_id.encode("ascii"), b'","events":', array, b"}"))


def gzip_body(body: bytes, level: int = GZIP_LEVEL) -> bytes:
    """Gzip (RFC 1952) framing, as ``Content-Encoding: gzip`` expects (one member)."""
    compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)
    return compressor.compress(body) + compressor.flush()


def gunzip_body(data: bytes, limit: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """Decompress, refusing to inflate past ``limit`` bytes (a gzip bomb stops early).

    >>> gunzip_body(gzip_body(b"x" * 100), limit=10)
    Traceback (most recent call last):
    ...
    edgemetrics.wire.BodyTooLarge: the body inflates past 10 bytes
    """
    # ISA-L inflates about twice as fast as zlib (the local collector inflates every body).
    inflater = isal_zlib.decompressobj(31)
    error = cast("type[Exception]", isal_zlib.error)  # its stub calls it an instance
    try:
        out = inflater.decompress(data, limit + 1)
    except error as exc:
        raise zlib.error(str(exc)) from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge(f"the body inflates past {limit} bytes")
    if not inflater.eof:
        raise zlib.error("the gzip stream is truncated")
    return out


def decode_body(data: bytes, *, gzipped: bool) -> tuple[str, list[Any]]:
    """The batch id and the raw event objects of a body this module wrote."""
    raw = gunzip_body(data) if gzipped else data
    parsed = orjson.loads(raw)
    return parsed["batch_id"], parsed["events"]
