"""A batch of events, the sink interface and how a sink says it failed.

A batch's id is assigned once and travels with it through retries and the spool, so a
receiver can drop a batch it has already accepted. ``body`` is the gzipped request body:
set when the exporter serialised the batch for a sink that sends it, when the batch comes
back from the spool, or the first time :meth:`Batch.gzipped_body` is asked for it. A sink
that reads only the events (``reads = "events"``: the store, the memory sink) never pays
for a body it would not read.

>>> from edgemetrics.events import View
>>> batch = Batch([View(content_id="v1")])
>>> len(batch), len(batch.batch_id), batch.load_events()[0].content_id
(1, 32, 'v1')
>>> again = Batch(batch_id=batch.batch_id, body=batch.gzipped_body(), count=1)
>>> again.load_events()[0].event_id == batch.events[0].event_id
True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edgemetrics.events import Event, parse_event
from edgemetrics.wire import decode_body, encode_body, gzip_body


def new_batch_id() -> str:
    """A fresh 32-hex-digit batch id."""
    return os.urandom(16).hex()


@dataclass(frozen=True, slots=True)
class Batch:
    """Events shipped together. ``batch_id`` is stable across retries."""

    # The batch's events as models; with a body, possibly only some of them (``count``
    # says how many the body holds).
    events: Sequence[Event] = ()
    batch_id: str = field(default_factory=new_batch_id)
    body: bytes | None = None
    count: int = -1

    def __len__(self) -> int:
        return self.count if self.count >= 0 else len(self.events)

    @property
    def critical(self) -> bool:
        """True when the batch carries money (purchases, refunds): dropped last.

        Events the exporter wrote straight to the body (raw records: api calls) never do.
        """
        return any(event.family == "commerce" for event in self.events)

    def gzipped_body(self) -> bytes:
        """The request body as sent: ``{"batch_id", "events"}`` JSON, gzipped (made once)."""
        if self.body is None:
            # Frozen for its users; the body is a cache of what the events already say.
            object.__setattr__(self, "body", gzip_body(encode_body(self.batch_id, self.events)))
        assert self.body is not None
        return self.body

    def load_events(self) -> list[Event]:
        """The events as models: ``events``, or parsed from the body when it holds more
        (a batch read back from the spool, or one with events written in wire form)."""
        if self.body is None or len(self.events) == len(self):
            return list(self.events)
        _, raw = decode_body(self.body, gzipped=True)
        return [parse_event(item) for item in raw]


class Sink(Protocol):
    """Where batches go: the Worker over HTTPS, the local collector, or the store itself.

    ``write`` returns once the sink accepted the batch (optionally the number of events
    it rejected one by one) and raises :class:`SinkError` (try again later) or
    :class:`BatchRejected` (never accepted) when it did not.

    A sink may say what it reads of a batch (a class attribute ``reads``), so the
    exporter makes only that:

    * ``reads = "events"``: ``batch.events`` in-process (the store, the memory sink).
      No body is made (a batch that goes to the spool is serialised then).
    * ``reads = "body"``: only :meth:`Batch.gzipped_body` (the HTTP sink). The body
      holds every event, within ``max_batch_bytes``; ``batch.events`` may hold only
      some of them (instrumentation records are written straight to the body).
    * no ``reads``: both, complete (any sink written without this in mind).
    """

    def write(self, batch: Batch) -> int | None: ...

    def close(self) -> None: ...


class SinkError(Exception):
    """The sink could not take the batch now; retry later with the same ids."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class BatchRejected(Exception):
    """The sink refused the batch for good (a 4xx other than 429): retrying cannot help."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
