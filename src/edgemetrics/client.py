"""The capture pipeline: ``track()`` appends to a buffer; one exporter thread ships batches.

The caller's thread does no I/O and no serialisation: ``track`` checks the event's type
and appends to a deque. The exporter thread (:mod:`edgemetrics.exporter`) batches,
serialises, signs and ships; batches the sink does not take go to the disk spool
(:mod:`edgemetrics.spool`) when one is configured. ``track_durable`` is the one call that
does I/O on the caller's thread, on purpose: a purchase is fsynced to the spool before it
returns.

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
import time
import weakref
from collections import deque
from collections.abc import Callable
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol, cast

from edgemetrics.batch import Batch, BatchRejected, Sink, SinkError, new_batch_id
from edgemetrics.events import EVENT_TYPES, Event, PipelineHealth
from edgemetrics.exporter import Exporter, RetryPolicy
from edgemetrics.privacy import Pseudonymizer
from edgemetrics.selfmon import Counters, health_event
from edgemetrics.spool import Spool, SpoolError
from edgemetrics.wire import WireEvent, encode_body, gzip_body

__all__ = [
    "Batch",
    "BatchRejected",
    "Client",
    "Counters",
    "FailureHook",
    "RawBuilder",
    "RetryPolicy",
    "Sink",
    "SinkError",
]

log = logging.getLogger("edgemetrics")

FailureHook = Callable[[Batch, BaseException], None]


class RawBuilder(Protocol):
    """Turns raw records into events on the exporter thread (see :meth:`Client.track_raw`).

    ``build`` gets the whole record (whose first item is the builder itself) and returns
    the event, or None when it kept the record for an aggregate. ``drain`` returns the
    aggregates that are complete; ``force`` (flush, close) asks for all of them.

    A builder may also have ``wire_json(records)``: the same events as the JSON texts
    of their wire objects (what :func:`edgemetrics.wire.encode_events` would write for
    them), for a run of its records at once; aggregated records give none. The exporter
    uses it for sinks that send the wire body, and skips the models altogether. Such
    events carry no user id and no money (they are neither pseudonymised nor critical).
    """

    def build(self, record: tuple[Any, ...]) -> Event | None: ...

    def drain(self, force: bool) -> list[Event]: ...


# The most events per request when the receiver takes more than 250 (the local collector
# takes 5,000): about 400 KB of JSON for typical events, under the default max_batch_bytes,
# so a batch is seldom serialised twice to be split.
NEGOTIATED_BATCH = 2000
_clients: weakref.WeakSet[Client] = weakref.WeakSet()
# How often a run of batches without user ids still lets the key store apply its
# rotation schedule (Pseudonymizer.apply), in seconds.
_KEY_CHECK_S = 1.0
_EVENT_CLASSES = frozenset(EVENT_TYPES.values())
_ONLY_TUPLES = {tuple}
_ONLY_TEXTS = {str}
# Handles inherited from the parent across fork are kept referenced, never closed: closing
# them in the child could disturb the parent's SQLite locks or sockets.
_inherited: list[Any] = []


class Client:
    """One per process: a bounded buffer and the exporter thread that drains it.

    ``spool`` is a directory (or a :class:`~edgemetrics.spool.Spool`); without one, a
    failed batch is retried in memory and then handed to ``on_failure`` or dropped
    (counted).
    """

    def __init__(
        self,
        sink: Sink,
        *,
        flush_interval: float = 5.0,
        max_batch: int | None = None,
        max_batch_bytes: int = 512 * 1024,
        max_buffer: int = 100_000,
        spool: Spool | str | Path | None = None,
        on_failure: FailureHook | None = None,
        retry: RetryPolicy | None = None,
        health_interval: float | None = 60.0,
        source: str = "exporter",
        max_in_flight: int = 4,
        pseudonymizer: Pseudonymizer | None = None,
    ) -> None:
        if max_batch is not None and not 1 <= max_batch <= 250:
            raise ValueError("max_batch: must be between 1 and 250 (AE's per-invocation limit)")
        if flush_interval <= 0:
            raise ValueError("flush_interval: must be positive")
        if max_buffer < 1:
            raise ValueError("max_buffer: must be at least 1")
        if not 1 <= max_in_flight <= 16:
            raise ValueError("max_in_flight: must be between 1 and 16")
        self.max_in_flight = max_in_flight
        self.sink = sink
        self.flush_interval = flush_interval
        self.max_batch = 250 if max_batch is None else max_batch
        # Left to the default, a batch may grow to what the receiver says it takes (see
        # batch_size); a max_batch given is kept to.
        self._batch_fixed = max_batch is not None
        self.max_batch_bytes = max_batch_bytes
        self.max_buffer = max_buffer
        self.on_failure = on_failure
        self.retry = retry or RetryPolicy()
        self.health_interval = health_interval
        self.source = source
        self.spool = spool if isinstance(spool, Spool) or spool is None else Spool(spool)
        # User ids never leave the process as given. Without a configured key store the
        # pseudonyms are stable for this process's life only (an in-memory key).
        self.pseudonymizer = pseudonymizer if pseudonymizer is not None else Pseudonymizer()
        self.counters = Counters()
        # Batches without user ids skip the key store until then (see prepare).
        self._next_key_check = 0.0
        # Raw records wake the exporter every few thousand, not every batch: each wake-up
        # costs a GIL hand-over that request threads pay for (flush_interval still bounds
        # how long a record waits).
        self._raw_wake = max(self.max_batch, min(2048, self.max_buffer // 2))
        self._pid = os.getpid()
        self._closed = False
        self._start()
        _clients.add(self)

    def _start(self) -> None:
        # Events, or raw tuples whose first item is a RawBuilder (built off the hot path).
        self._buffer: deque[Event | tuple[Any, ...]] = deque()
        self._builders: set[RawBuilder] = set()
        self._exporter = Exporter(self)
        self._exporter.start()

    # --- the hot path ------------------------------------------------------------

    def track(self, event: Event) -> None:
        """Queue one event; never blocks, never does I/O.

        A malformed event cannot reach here: the event model validated it when it was
        built (``View(position=-1)`` raises ``InvalidEvent`` naming the field).
        """
        # An exact-type lookup is several times cheaper than isinstance on pydantic's
        # ABC metaclass; subclasses of the event models still pass the slower check.
        if type(event) not in _EVENT_CLASSES and not isinstance(event, Event):
            raise TypeError(
                f"event: expected an edgemetrics event model, got {type(event).__name__}"
            )
        # No pid check here (a getpid() costs more than the rest of this method): a fork
        # runs _reinit_children through os.register_at_fork, and every call that can send
        # (flush, close, track_durable) checks the pid, so a child never ships the
        # parent's buffer even after a fork that bypassed the hook.
        buffer = self._buffer
        depth = len(buffer)
        if depth >= self.max_buffer:
            self.counters.add(dropped_buffer_full=1)
            return
        buffer.append(event)
        if depth + 1 == self.max_batch:
            self._exporter.wake()

    def batch_size(self) -> int:
        """How many events the exporter puts in one request now.

        ``max_batch`` (250 by default: AE's per-invocation limit, which the Worker keeps).
        When ``max_batch`` was left to the default and the sink's receiver said it takes
        more (the local collector answers with ``X-Edgemetrics-Max-Events``; the sink keeps
        it in ``max_events``), up to that many, at most ``NEGOTIATED_BATCH``: every request
        costs both sides a fixed amount of CPU (HTTP, signing, the receiver's handler), so
        a backlog drains in fewer, larger requests. Bodies still split at
        ``max_batch_bytes``.

        >>> from edgemetrics.sinks import MemorySink
        >>> class Local(MemorySink):
        ...     max_events = 5000
        >>> Client(Local()).batch_size(), Client(Local(), max_batch=100).batch_size()
        (2000, 100)
        """
        if self._batch_fixed:
            return self.max_batch
        offered = getattr(self.sink, "max_events", None)
        if type(offered) is not int or offered <= self.max_batch:
            return self.max_batch
        return min(offered, NEGOTIATED_BATCH)

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
        depth = len(buffer)
        if depth >= self.max_buffer:
            self.counters.add(dropped_buffer_full=1)
            return
        buffer.append(record)
        if depth + 1 == self._raw_wake:
            self._exporter.wake()

    def build_raw(self, items: list[Event | tuple[Any, ...]]) -> list[Event]:
        """Exporter thread: raw records become events (or go into their aggregates)."""
        return cast(list[Event], self._build(items, wire=False))

    def build_wire(self, items: list[Event | tuple[Any, ...]]) -> list[Event | WireEvent]:
        """Exporter thread, for a sink that sends wire bodies: raw records become the JSON
        texts of their wire objects where their builder writes them (no model in
        between), else events."""
        return self._build(items, wire=True)

    def _build(self, items: list[Event | tuple[Any, ...]], *, wire: bool) -> list[Any]:
        out: list[Any] = []
        if wire and items and set(map(type, items)) == _ONLY_TUPLES:
            # The usual batch of an API: records of one middleware only. Checked by C-level
            # scans, then written in one call: no per-record bytecode here.
            records = cast(list[tuple[Any, ...]], items)
            firsts = set(map(itemgetter(0), records))
            if len(firsts) == 1:
                (only,) = firsts
                writer = getattr(only, "wire_json", None)
                if writer is not None:
                    self._builders.add(only)
                    self._write_run(writer, records, out)
                    return out
        append = out.append
        builders = self._builders
        last: Any = None
        make: Any = None
        bulk: Any = None
        run: list[tuple[Any, ...]] = []  # consecutive records for ``bulk``
        for item in items:
            if type(item) is not tuple:
                if run:
                    self._write_run(bulk, run, out)
                    run = []
                append(item)
                continue
            builder = item[0]
            if builder is not last:
                if run:
                    self._write_run(bulk, run, out)
                    run = []
                builders.add(builder)
                last = builder
                make = builder.build
                bulk = getattr(builder, "wire_json", None) if wire else None
            if bulk is not None:
                run.append(item)
                continue
            try:
                event = make(item)
            except Exception as exc:  # a builder bug must never stop the exporter
                log.warning("edgemetrics: raw record dropped: %r", exc)
                continue
            if event is not None:
                append(event)
        if run:
            self._write_run(bulk, run, out)
        return out

    @staticmethod
    def _write_run(bulk: Any, run: list[tuple[Any, ...]], out: list[Any]) -> None:
        try:
            out.extend(bulk(run))
        except Exception:
            # One bad record must not take the others with it: again one by one.
            for record in run:
                try:
                    out.extend(bulk([record]))
                except Exception as exc:
                    log.warning("edgemetrics: raw record dropped: %r", exc)

    def drain_aggregates(self, force: bool) -> list[Event]:
        """Exporter thread: the aggregates that are complete (all of them when ``force``)."""
        out: list[Event] = []
        for builder in list(self._builders):
            try:
                out.extend(builder.drain(force))
            except Exception as exc:
                log.warning("edgemetrics: aggregate dropped: %r", exc)
        return out

    def track_durable(self, event: Event) -> bool:
        """Write one event to the spool and fsync it before returning (purchases, refunds).

        Returns True when the event is on disk. Without a spool, or when the spool cannot
        write (full disk), the event is queued in memory like :meth:`track`, the failure
        is logged and counted, and False is returned: the host's handler carries on.

        >>> import tempfile
        >>> from edgemetrics.events import Purchase
        >>> from edgemetrics.sinks import MemorySink
        >>> client = Client(MemorySink(), spool=tempfile.mkdtemp(), health_interval=None)
        >>> client.track_durable(Purchase(amount_minor=499, currency="EUR", transaction_id="t1"))
        True
        >>> client.close()
        """
        if not isinstance(event, Event):
            raise TypeError(
                f"event: expected an edgemetrics event model, got {type(event).__name__}"
            )
        if self._pid != os.getpid():
            self._after_fork()
        spool = self.spool
        if spool is None:
            self.track(event)
            return False
        # This path serialises on the caller's thread, so pseudonymise here too.
        prepared = self.prepare([event])
        if not prepared:
            return False
        event = prepared[0]
        batch_id = new_batch_id()
        try:
            spool.put(
                batch_id,
                gzip_body(encode_body(batch_id, [event])),
                events=1,
                critical=event.family == "commerce",
                durable=True,
            )
        except SpoolError as exc:
            self.counters.add(durable_failures=1, spool_errors=1)
            log.error(
                "edgemetrics: could not write %s %s to the spool (%s); kept in memory only",
                event.type,
                event.event_id,
                exc,
            )
            self.track(event)
            return False
        self.counters.add(tracked=1, durable_events=1)
        self._exporter.spool_has_work()
        return True

    def prepare(self, events: list[Event]) -> list[Event]:
        """What may leave the process: user ids pseudonymised, opted-out users' events
        dropped (counted in ``dropped_opted_out``). Runs on the exporter thread.

        """
        if not events:
            return events
        now = time.monotonic()
        if now < self._next_key_check and not any(
            getattr(e, "user_id", None) is not None for e in events
        ):
            # No user id to pseudonymise or to drop for an opt-out: the key store (a
            # SQLite read, and a GIL hand-over that costs the exporter milliseconds while
            # the host's threads run) is consulted once a second for its rotation
            # schedule, not once a batch.
            return events
        self._next_key_check = now + _KEY_CHECK_S
        try:
            kept, dropped = self.pseudonymizer.apply(events)
        except Exception as exc:  # never export raw ids because the key store failed
            with_user = sum(1 for e in events if getattr(e, "user_id", None) is not None)
            kept = [e for e in events if getattr(e, "user_id", None) is None]
            dropped = 0
            self.counters.add(dropped_invalid=with_user)
            log.error(
                "edgemetrics: privacy key store unavailable (%s); dropped %d events with a "
                "user id rather than send it unpseudonymised",
                type(exc).__name__,
                with_user,
            )
        if dropped:
            self.counters.add(dropped_opted_out=dropped)
        return kept

    def prepare_items(self, items: list[Event | WireEvent]) -> list[Event | WireEvent]:
        """:meth:`prepare` for a mix of models and wire texts; wire texts (raw records
        written for the wire) carry no user id and pass as they are."""
        if set(map(type, items)) == _ONLY_TEXTS:
            return items  # wire texts only (an API's requests): nothing to pseudonymise
        # The pseudonymiser reads user_id with getattr: a wire text has none.
        return cast(list[Event | WireEvent], self.prepare(cast(list[Event], items)))

    # --- control -----------------------------------------------------------------

    @property
    def buffer_depth(self) -> int:
        """Events waiting in memory."""
        return len(self._buffer)

    def flush(self, timeout: float = 10.0) -> bool:
        """Ship (or spool) everything buffered now; True when it drained within ``timeout``."""
        if self._pid != os.getpid():
            self._after_fork()
        return self._exporter.drain(time.monotonic() + timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Flush with a deadline; what is not delivered by then goes to the spool. Then stop."""
        if self._closed:
            return
        if self._pid != os.getpid():
            self._after_fork()
        self._closed = True
        deadline = time.monotonic() + timeout
        self._exporter.stop(deadline)
        if self.spool is not None:
            self.spool.close()
        self.sink.close()
        self.pseudonymizer.close()

    def health(self) -> PipelineHealth:
        """A ``PipelineHealth`` snapshot of this process's pipeline.

        >>> from edgemetrics.sinks import MemorySink
        >>> client = Client(MemorySink(), health_interval=None)
        >>> client.health().buffer_depth
        0
        >>> client.close()
        """
        stats = None
        if self.spool is not None and not self._closed:
            try:
                stats = self.spool.stats()
            except SpoolError as exc:
                log.error("edgemetrics: spool stats unavailable: %s", exc)
        return health_event(
            self.counters, source=self.source, buffer_depth=self.buffer_depth, spool=stats
        )

    # --- fork ----------------------------------------------------------------------

    def _after_fork(self) -> None:
        """In a forked child: an empty buffer, fresh counters, own handles, own thread.

        The parent's buffered events stay the parent's to send: the child never sends
        them a second time.
        """
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        _inherited.append((self.spool, self.sink, self._exporter))
        self.counters.reset_after_fork()
        if self.spool is not None:
            self.spool.reopen_after_fork()
        self.pseudonymizer.reset_after_fork()
        reset = getattr(self.sink, "reset_after_fork", None)
        if callable(reset):
            reset()
        if not self._closed:
            self._start()


def _reinit_children() -> None:
    for client in list(_clients):
        client._after_fork()


os.register_at_fork(after_in_child=_reinit_children)
