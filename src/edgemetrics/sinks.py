"""Sinks: where the exporter thread delivers batches.

>>> sink = MemorySink()
>>> from edgemetrics.events import View
>>> sink.write(Batch([View(content_id="v1")]))
>>> [e.type for e in sink.events]
['view']
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edgemetrics.batch import Batch
from edgemetrics.events import Event
from edgemetrics.layout import DataPoint, LayoutLimitError, encode

if TYPE_CHECKING:
    from edgemetrics.store import EmbeddedStore

log = logging.getLogger("edgemetrics")


class MemorySink:
    """Keeps events in a list: for tests and for inspecting what a host app sends."""

    reads = "events"  # in-process: the exporter makes no wire body for it

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.batches: list[Batch] = []

    def write(self, batch: Batch) -> None:
        self.batches.append(batch)
        self.events.extend(batch.load_events())

    def close(self) -> None:
        pass


def encode_batch(batch: Batch) -> tuple[list[DataPoint], list[tuple[Event, str]]]:
    """Encode each event; one that breaks an AE limit is set aside, the rest are kept."""
    points: list[DataPoint] = []
    rejected: list[tuple[Event, str]] = []
    for event in batch.load_events():
        try:
            points.append(encode(event))
        except LayoutLimitError as exc:
            rejected.append((event, str(exc)))
    return points, rejected


class StoreSink:
    """Writes straight into the embedded store owned by this process."""

    reads = "events"  # in-process: the exporter makes no wire body for it

    def __init__(self, store: EmbeddedStore, *, close_store: bool = False) -> None:
        self.store = store
        self.close_store = close_store
        self.rejected = 0

    def write(self, batch: Batch) -> None:
        points, rejected = encode_batch(batch)
        for event, reason in rejected:
            log.warning("edgemetrics: event %s rejected: %s", event.event_id, reason)
        self.rejected += len(rejected)
        self.store.write(points)

    def close(self) -> None:
        if self.close_store:
            self.store.close()
