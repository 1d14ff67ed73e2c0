"""The capture pipeline: ``track()`` appends to a buffer; one exporter thread ships batches.

The caller's thread does no I/O and no serialisation: ``track`` checks the event's type
and appends to a deque. The exporter thread wakes every ``flush_interval`` seconds (or
sooner when a full batch is waiting), takes up to ``max_batch`` events and hands them to
the sink. When the sink fails, the batch goes to the ``on_failure`` hook (the spool).

>>> from edgemetrics.sinks import MemorySink
>>> from edgemetrics.events import View
>>> sink = MemorySink()
>>> client = Client(sink, flush_interval=0.05)
>>> client.track(View(content_id="v1"))
>>> client.flush()
True
>>> len(sink.events)
1
>>> client.close()
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edgemetrics.events import Event

log = logging.getLogger("edgemetrics")


@dataclass(frozen=True, slots=True)
class Batch:
    """Events shipped together. ``batch_id`` is stable across retries."""

    events: Sequence[Event]
    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class Sink(Protocol):
    """Where batches go: the Worker over HTTPS, the local collector, or the store itself.

    ``write`` returns once the sink accepted the batch and raises when it did not.
    """

    def write(self, batch: Batch) -> None: ...

    def close(self) -> None: ...


FailureHook = Callable[[Batch, BaseException], None]


@dataclass
class Counters:
    """What the pipeline did, for self-monitoring."""

    tracked: int = 0
    exported: int = 0
    dropped_buffer_full: int = 0
    failed_batches: int = 0
    batches: int = 0


class Client:
    """One per process: a bounded buffer and the exporter thread that drains it."""

    def __init__(
        self,
        sink: Sink,
        *,
        flush_interval: float = 5.0,
        max_batch: int = 250,
        max_buffer: int = 100_000,
        on_failure: FailureHook | None = None,
    ) -> None:
        if not 1 <= max_batch <= 250:
            raise ValueError("max_batch: must be between 1 and 250 (AE's per-invocation limit)")
        if flush_interval <= 0:
            raise ValueError("flush_interval: must be positive")
        self.sink = sink
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.max_buffer = max_buffer
        self.on_failure = on_failure
        self.counters = Counters()
        self._buffer: deque[Event] = deque()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="edgemetrics-exporter", daemon=True)
        self._thread.start()

    def track(self, event: Event) -> None:
        """Queue one event; never blocks, never does I/O."""
        if not isinstance(event, Event):
            raise TypeError(
                f"event: expected an edgemetrics event model, got {type(event).__name__}"
            )
        buffer = self._buffer
        if len(buffer) >= self.max_buffer:
            self.counters.dropped_buffer_full += 1
            return
        buffer.append(event)
        if len(buffer) >= self.max_batch:
            self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Ship everything buffered now; True when the buffer drained within ``timeout``."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._idle:
            while self._buffer or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._wake.set()
                self._idle.wait(min(remaining, 0.05))
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Flush with a deadline, stop the thread and close the sink."""
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        self.sink.close()

    def _take(self) -> list[Event]:
        out: list[Event] = []
        buffer = self._buffer
        while buffer and len(out) < self.max_batch:
            out.append(buffer.popleft())
        return out

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            while True:
                with self._idle:
                    events = self._take()
                    self._in_flight = len(events)
                if not events:
                    break
                self._ship(Batch(events))
                with self._idle:
                    self._in_flight = 0
                    self._idle.notify_all()
            with self._idle:
                self._idle.notify_all()
            if self._closed:
                return

    def _ship(self, batch: Batch) -> None:
        try:
            self.sink.write(batch)
        except Exception as exc:  # the sink's failure must never reach the host app
            self.counters.failed_batches += 1
            if self.on_failure is not None:
                self.on_failure(batch, exc)
            else:
                log.warning("edgemetrics: batch of %d events lost: %s", len(batch.events), exc)
            return
        self.counters.batches += 1
        self.counters.exported += len(batch.events)
