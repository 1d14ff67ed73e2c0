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
import os
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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


class RawBuilder(Protocol):
    """Turns raw records into events on the exporter thread (see :meth:`Client.track_raw`).

    ``build`` gets the whole record (whose first item is the builder itself) and returns
    the event, or None when it kept the record for an aggregate. ``drain`` returns the
    aggregates that are complete; ``force`` (flush, close) asks for all of them.
    """

    def build(self, record: tuple[Any, ...]) -> Event | None: ...

    def drain(self, force: bool) -> list[Event]: ...


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
        # Events, or raw tuples whose first item is a RawBuilder (built off the hot path).
        self._buffer: deque[Event | tuple[Any, ...]] = deque()
        self._builders: set[RawBuilder] = set()
        self._raw_wake = max(self.max_batch, min(2048, self.max_buffer // 2))
        self._drain_requested = 0
        self._drained = 0
        self._closed = False
        self._start_exporter()
        _live_clients.add(self)

    def _start_exporter(self) -> None:
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="edgemetrics-exporter", daemon=True)
        self._thread.start()

    def _after_fork_in_child(self) -> None:
        # The parent's thread does not exist here and its locks may be held: start afresh.
        # The parent still owns (and ships) what was buffered before the fork.
        self._buffer.clear()
        self._builders = set()
        self._drain_requested = self._drained = 0
        if not self._closed:
            self._start_exporter()

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

    def track_raw(self, record: tuple[Any, ...]) -> None:
        """Queue a raw record whose first item is a :class:`RawBuilder`; never blocks.

        For instrumentation whose events are well-formed by construction (the middleware):
        the caller's thread only appends a tuple, and the exporter thread builds the event
        (or folds it into an aggregate, in cost mode).

        >>> from edgemetrics.sinks import MemorySink
        >>> from edgemetrics.events import View
        >>> class Views:
        ...     def build(self, record): return View(content_id=record[1])
        ...     def drain(self, force): return []
        >>> sink = MemorySink()
        >>> client = Client(sink)
        >>> client.track_raw((Views(), "v7"))
        >>> client.flush() and sink.events[0].content_id
        'v7'
        >>> client.close()
        """
        buffer = self._buffer
        if len(buffer) >= self.max_buffer:
            self.counters.dropped_buffer_full += 1
            return
        buffer.append(record)
        if len(buffer) == self._raw_wake:
            # Only on the crossing: an exporter already draining keeps going until the
            # buffer is empty. Raw records wake it every few thousand, not every batch:
            # each wake-up costs a GIL hand-over that the request threads pay for, and a
            # busy API fills a batch every few milliseconds (flush_interval still bounds
            # how long a record waits).
            self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Ship everything buffered now; True when the buffer drained within ``timeout``.

        Aggregates still open (cost mode) are shipped too, as partial rows that sum right.
        """
        if os.getpid() != self._pid:
            self._after_fork_in_child()
        deadline = time.monotonic() + timeout
        with self._idle:
            self._drain_requested += 1
            wanted = self._drain_requested
        self._wake.set()
        with self._idle:
            while self._buffer or self._in_flight or self._drained < wanted:
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
        builders = self._builders
        while buffer and len(out) < self.max_batch:
            item = buffer.popleft()
            if type(item) is tuple:
                builder = item[0]
                builders.add(builder)
                try:
                    event = builder.build(item)
                except Exception as exc:  # a builder bug must never stop the exporter
                    log.warning("edgemetrics: raw record dropped: %r", exc)
                    continue
                if event is not None:
                    out.append(event)
            else:
                out.append(item)  # type: ignore[arg-type]
        return out

    def _drain_builders(self, force: bool) -> list[Event]:
        out: list[Event] = []
        for builder in list(self._builders):
            try:
                out.extend(builder.drain(force))
            except Exception as exc:
                log.warning("edgemetrics: aggregate dropped: %r", exc)
        return out

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            with self._idle:
                wanted = self._drain_requested
            while True:
                with self._idle:
                    events = self._take()
                    self._in_flight = len(events)
                if not events:
                    break
                self._ship_all(events)
            with self._idle:
                pending = self._drain_builders(force=wanted > self._drained or self._closed)
                self._in_flight = len(pending)
            self._ship_all(pending)
            with self._idle:
                self._drained = wanted
                self._idle.notify_all()
            if self._closed:
                return

    def _ship_all(self, events: list[Event]) -> None:
        for start in range(0, len(events), self.max_batch):
            self._ship(Batch(events[start : start + self.max_batch]))
        with self._idle:
            self._in_flight = 0
            self._idle.notify_all()

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


_live_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def _reinit_clients_after_fork() -> None:
    for client in list(_live_clients):
        client._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    # gunicorn --preload, multiprocessing: each child gets its own exporter thread.
    os.register_at_fork(after_in_child=_reinit_clients_after_fork)
