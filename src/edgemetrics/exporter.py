"""The exporter thread: batches the buffer, ships it, spools what the sink does not take.

One thread per process. Each cycle it takes up to ``Client.batch_size()`` events (at most
250, AE's per-invocation limit, unless the receiver said it takes more: the local
collector), splits them further when the serialised body would pass
``max_batch_bytes``, and sends. Between live batches it replays one spooled batch, oldest
first, so new events keep flowing while a backlog drains. A failed send opens a backoff
window (exponential with jitter, or the receiver's ``Retry-After``): during it, new
batches go straight to the spool and no request is made. Every wait is on an event that
``flush``/``close`` set, so none of them delays shutdown.

>>> policy = RetryPolicy(base=0.5, cap=4.0, jitter=0.0)
>>> [policy.delay(n) for n in (1, 2, 3, 4, 5)]
[0.5, 1.0, 2.0, 4.0, 4.0]
>>> policy.delay(1, retry_after=30.0)
30.0
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from itertools import repeat, starmap
from operator import attrgetter, call, itemgetter
from typing import TYPE_CHECKING, Any

import msgspec

from edgemetrics.batch import Batch, BatchRejected, SinkError, new_batch_id
from edgemetrics.events import Event
from edgemetrics.spool import SpooledBatch, SpoolError
from edgemetrics.wire import WireEvent, encode_body, encode_events, encode_texts, gzip_body

if TYPE_CHECKING:
    from edgemetrics.client import Client

log = logging.getLogger("edgemetrics")


def _pop_left(buffer: deque[Any], n: int) -> list[Any]:
    """Up to ``n`` items from the left of ``buffer``, oldest first.

    The exporter is the buffer's only consumer (producers append on the right), so the n
    it saw are there: they are popped by one C-level loop, not n bytecode iterations
    (this runs once per event). Should another consumer race it (exit), it gets fewer.

    >>> _pop_left(deque([1, 2, 3]), 2), _pop_left(deque([1]), 3)
    ([1, 2], [1])
    """
    items: list[Any] = []
    # extend keeps what it appended before an error: nothing popped is lost.
    with suppress(IndexError):
        items.extend(map(call, repeat(buffer.popleft, n)))
    return items


_BASE_KEYS = ("type", "event_id", "timestamp")
_fields_set_of = attrgetter("__pydantic_fields_set__")
_values_of = attrgetter("__dict__")
# One msgspec struct per list of keys a batch's events send (see _encode_alike).
_WIRE_STRUCTS: dict[tuple[str, ...], type[msgspec.Struct]] = {}
_WIRE_ENCODER = msgspec.json.Encoder()


def _encode_alike(events: list[Any]) -> bytes | None:
    """The JSON array of a batch of events of one model built alike (one fields set, as
    the events of one call site share: see ``events._FIELDS_SETS``): the same objects
    :func:`edgemetrics.wire.encode_events` writes, the same keys in the same order, made
    without a dict per event: each event's values are read by one C-level getter into a
    msgspec struct, and the structs are encoded in one call. About a third of the CPU
    per event; datetimes are written with ``Z`` for UTC (``+00:00`` there: both RFC 3339,
    read alike by the collector and the Worker). None for any other batch.

    >>> from edgemetrics.events import View
    >>> from edgemetrics.wire import decode_body, encode_body
    >>> views = [View(content_id="v1", position=n) for n in range(2)]
    >>> body = encode_body("0" * 32, _encode_alike(views))
    >>> sorted(decode_body(body, gzipped=False)[1][1])
    ['content_id', 'event_id', 'position', 'timestamp', 'type']
    """
    if len(set(map(id, map(_fields_set_of, events)))) != 1:
        return None
    first = events[0]
    given = first.__pydantic_fields_set__
    values = first.__dict__
    if 2 * len(given) >= len(values):
        keys = tuple(values)  # most fields given: the whole event, as encode_events does
    else:
        keys = _BASE_KEYS + tuple(name for name in given if name not in _BASE_KEYS)
    struct = _WIRE_STRUCTS.get(keys)
    if struct is None:
        if len(_WIRE_STRUCTS) >= 1024:
            _WIRE_STRUCTS.clear()
        struct = _WIRE_STRUCTS[keys] = msgspec.defstruct("WireEvent", keys, gc=False)
    try:
        return _WIRE_ENCODER.encode(
            list(starmap(struct, map(itemgetter(*keys), map(_values_of, events))))
        )
    except (TypeError, KeyError, ValueError):  # a value msgspec does not write as JSON
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff between attempts: ``base * 2**(n-1)`` capped at ``cap``, times a random
    factor in ``[1 - jitter, 1]`` so many processes do not retry in step. Without a spool,
    a batch is tried ``max_attempts`` times before it is given up (counted)."""

    base: float = 0.5
    cap: float = 60.0
    jitter: float = 0.5
    max_attempts: int = 5
    max_retry_after: float = 600.0

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after ``failures`` consecutive failures."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        raw = min(self.cap, self.base * 2 ** max(failures - 1, 0))
        return float(raw * (1.0 - self.jitter * random.random()))


class Exporter:
    """The thread that drains one client's buffer; see the module docs."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._in_flight: list[Event | WireEvent] = []
        # flush() asks for open aggregates (cost mode) too: requests and what was served.
        self._drain_requested = 0
        self._drained = 0
        self._stopping = False
        self._deadline = float("inf")
        self._failures = 0
        self._backoff_until = 0.0
        self._spool_work = client.spool is not None
        # What the sink reads of a batch (see Sink): "events", "body", or both.
        reads = getattr(client.sink, "reads", None)
        self._takes_events = reads == "events"
        self._sends_body = reads == "body"
        self._next_spool_check = 0.0
        self._next_health = (
            time.monotonic() + client.health_interval if client.health_interval else float("inf")
        )
        self._spool_error_logged = 0.0
        # Up to max_in_flight requests at once: serialising the next batch (and the
        # receiver's work) overlaps the wait for the previous answer.
        self._slots = threading.BoundedSemaphore(max(1, client.max_in_flight))
        self._pending: dict[str, Batch] = {}
        self._pool = (
            ThreadPoolExecutor(client.max_in_flight, thread_name_prefix="edgemetrics-send")
            if client.max_in_flight > 1
            else None
        )
        self._thread = threading.Thread(target=self._run, name="edgemetrics-exporter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def spool_has_work(self) -> None:
        # No wake: what was put is on disk already, and a replay (claim, send, ack) started
        # per durable put would run beside the next purchase's fsync and double its p99.
        # The next cycle (flush_interval at the latest, or flush()) sends it in one claim.
        self._spool_work = True

    # --- called from other threads ----------------------------------------------

    def drain(self, deadline: float) -> bool:
        """Wait until the buffer is empty and nothing is in flight, or ``deadline``."""
        buffer = self.client._buffer
        with self._idle:
            self._drain_requested += 1
            wanted = self._drain_requested
            while buffer or self._in_flight or self._pending or self._drained < wanted:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._wake.set()
                self._idle.wait(min(remaining, 0.05))
        return True

    def stop(self, deadline: float) -> None:
        """Deliver until ``deadline``, spool the rest, stop the thread."""
        self._deadline = deadline
        self._stopping = True
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        with self._idle:
            while self._pending and time.monotonic() < deadline + 1.0:
                self._idle.wait(0.05)
            unsent = list(self._pending.values())
            self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        # Past the deadline: batches still unanswered go to the spool with their own ids
        # (a late answer then only makes the replay a duplicate, which receivers drop),
        # and so does what is left in the buffer.
        for batch in unsent:
            self._spool_batch(batch, reason="exit deadline passed")
        leftover = self._take_all()
        if leftover:
            self._spool_or_drop(leftover, reason="exit deadline passed")

    # --- the thread ----------------------------------------------------------------

    def _run(self) -> None:
        client = self.client
        while True:
            timeout = client.flush_interval
            if self._spool_work and self._backoff_until:
                # A backlog waits for the end of the backoff, not for the next flush.
                timeout = min(timeout, max(0.0, self._backoff_until - time.monotonic()))
            self._wake.wait(timeout)
            self._wake.clear()
            try:
                self._cycle()
            except Exception:  # the exporter must survive anything; the host app must not see it
                log.exception("edgemetrics: exporter cycle failed")
            with self._idle:
                self._idle.notify_all()
            if self._stopping:
                leftover = self._take_all()
                if leftover:
                    self._spool_or_drop(leftover, reason="exit")
                with self._idle:
                    self._idle.notify_all()
                return

    def _cycle(self) -> None:
        with self._idle:
            wanted = self._drain_requested
        now = time.monotonic()
        if now >= self._next_health:
            self._next_health = now + (self.client.health_interval or float("inf"))
            health = self.client.health()
            self.client.track(health)
            if self.client.spool is not None:
                try:
                    self.client.spool.record_health(
                        {
                            **health.model_dump(
                                mode="json", exclude={"type", "event_id", "timestamp"}
                            ),
                            "dropped": self.client.counters.dropped,
                            "export_latency_ms_max": self.client.counters.export_latency_ms_max,
                        }
                    )
                except SpoolError as exc:
                    log.error("edgemetrics: could not record health in the spool: %s", exc)
        while True:
            events = self._take()
            if events:
                with self._idle:
                    self._in_flight = events
                try:
                    self._deliver_live(events)
                finally:
                    with self._idle:
                        self._in_flight = []
                        self._idle.notify_all()
            replayed = False if self._stopping else self._replay_one()
            if not events and not replayed:
                self._ship_aggregates(wanted)
                return

    def _build(self, items: list[Event | tuple[Any, ...]]) -> list[Event | WireEvent]:
        # A sink that reads only bodies gets raw records straight in wire form (no model).
        if self._sends_body:
            return self.client.build_wire(items)
        return list[Event | WireEvent](self.client.build_raw(items))

    def _take(self) -> list[Event | WireEvent]:
        buffer = self.client._buffer
        while True:
            n = min(len(buffer), self.client.batch_size())
            items = _pop_left(buffer, n)
            if not items:
                return []
            # Counted here, off the caller's thread: events_in = what left the buffer.
            self.client.counters.add(tracked=len(items))
            out = self._build(items)
            if not out:  # all folded into aggregates
                continue
            # In flight before the privacy step (it may touch the key store), so a
            # concurrent flush() never sees an empty buffer and nothing in flight.
            with self._idle:
                self._in_flight = out
            kept = self.client.prepare_items(out)
            if kept:
                return kept
            with self._idle:
                self._in_flight = []
                self._idle.notify_all()

    def _take_all(self) -> list[Event | WireEvent]:
        buffer = self.client._buffer
        items = []
        while True:
            try:
                items.append(buffer.popleft())
            except IndexError:
                break
        events = self._build(items) + list(self.client.drain_aggregates(force=True))
        return self.client.prepare_items(events)

    def _ship_aggregates(self, wanted: int) -> None:
        """Ship the aggregates that are complete, or all of them when a flush asked."""
        force = self._stopping or self._drained < wanted
        ready = self.client.prepare(self.client.drain_aggregates(force))
        step = self.client.max_batch
        for start in range(0, len(ready), step):
            chunk = list[Event | WireEvent](ready[start : start + step])
            with self._idle:
                self._in_flight = chunk
            try:
                self._deliver_live(chunk)
            finally:
                with self._idle:
                    self._in_flight = []
                    self._idle.notify_all()
        with self._idle:
            self._drained = max(self._drained, wanted)
            self._idle.notify_all()

    def _batches(self, events: list[Event | WireEvent]) -> list[Batch]:
        """Serialise; split in halves while a body would pass ``max_batch_bytes``.

        For a sink that takes events in-process there is nothing to serialise: the
        body is made later only if the batch goes to the spool.
        """
        if self._takes_events:
            return [Batch(events)]  # type: ignore[arg-type]  # models only (see _build)
        # Wire texts only (an API's requests) is told by one C-level scan, made once.
        kinds = set(map(type, events))
        texts_only = len(kinds) == 1 and str in kinds
        if texts_only:
            array = encode_texts(events)  # type: ignore[arg-type]
        else:
            alike = _encode_alike(events) if len(kinds) == 1 else None
            array = alike if alike is not None else encode_events(events)
        if len(array) > self.client.max_batch_bytes and len(events) > 1:
            half = len(events) // 2
            return self._batches(events[:half]) + self._batches(events[half:])
        batch_id = new_batch_id()
        # The body holds every event; ``events`` keeps the models among them.
        if str not in kinds:
            models = list(events)
        elif len(kinds) == 1:
            models = []  # wire texts only (an API's requests)
        else:
            models = [e for e in events if type(e) is not str]
        body = gzip_body(encode_body(batch_id, array))
        return [Batch(models, batch_id=batch_id, body=body, count=len(events))]  # type: ignore[arg-type]

    def _deliver_live(self, events: list[Event | WireEvent]) -> None:
        batches = self._batches(events)
        with self._idle:
            # Registered before any is sent: until answered, each is "pending" (exit
            # spools pending batches with their ids), and the events leave _in_flight.
            for batch in batches:
                self._pending[batch.batch_id] = batch
            self._in_flight = []
        for batch in batches:
            if self._past_deadline():
                self._finish(batch, lambda b: self._spool_batch(b, reason="exit deadline"))
                continue
            if self.client.spool is not None and time.monotonic() < self._backoff_until:
                self._finish(batch, lambda b: self._spool_batch(b, reason="sink unavailable"))
                continue
            if self._pool is None:
                self._finish(batch, self._deliver_one)
                continue
            self._slots.acquire()
            try:
                self._pool.submit(self._deliver_pending, batch)
            except RuntimeError:  # the pool is shut down (exit): deliver here
                self._deliver_pending(batch)

    def _finish(self, batch: Batch, action: Callable[[Batch], None]) -> None:
        try:
            action(batch)
        finally:
            with self._idle:
                self._pending.pop(batch.batch_id, None)
                self._idle.notify_all()

    def _deliver_pending(self, batch: Batch) -> None:
        try:
            self._finish(batch, self._deliver_one)
        except Exception:
            log.exception("edgemetrics: delivering batch %s failed", batch.batch_id)
        finally:
            self._slots.release()

    def _deliver_one(self, batch: Batch) -> None:
        outcome = self._send(batch, retry=False)
        if outcome != "retry":
            return
        if self.client.spool is not None:
            self._spool_batch(batch, reason="sink failed", attempts=1)
        else:
            self._retry_in_memory(batch)

    def _retry_in_memory(self, batch: Batch) -> None:
        policy = self.client.retry
        for _ in range(policy.max_attempts - 1):
            if not self._sleep_until(self._backoff_until):
                break
            if self._send(batch, retry=True) != "retry":
                return
        self.client.counters.add(dropped_retries_exhausted=len(batch), failed_batches=1)
        error = SinkError(f"gave up after {policy.max_attempts} attempts")
        if self.client.on_failure is not None:
            self.client.on_failure(batch, error)
        else:
            log.error("edgemetrics: batch of %d events lost: %s", len(batch), error)

    def _sleep_until(self, when: float) -> bool:
        """Interruptible wait; False when stopping or past the exit deadline."""
        while True:
            if self._stopping and self._past_deadline():
                return False
            remaining = when - time.monotonic()
            if remaining <= 0:
                return True
            if self._stopping:
                remaining = min(remaining, self._deadline - time.monotonic())
            self._wake.wait(max(remaining, 0.0))
            self._wake.clear()

    def _past_deadline(self) -> bool:
        return self._stopping and time.monotonic() >= self._deadline

    def _send(self, batch: Batch, *, retry: bool) -> str:
        """One attempt: ``ok``, ``rejected`` (never retry) or ``retry``."""
        counters = self.client.counters
        if retry:
            counters.add(retries=1)
        started = time.perf_counter()
        try:
            rejected = self.client.sink.write(batch) or 0
        except BatchRejected as exc:
            counters.add(rejected_batches=1, dropped_invalid=len(batch))
            log.error(
                "edgemetrics: batch %s of %d events refused: %s", batch.batch_id, len(batch), exc
            )
            return "rejected"
        except Exception as exc:  # any sink failure is retried: it must not reach the host app
            self._failures += 1
            retry_after = exc.retry_after if isinstance(exc, SinkError) else None
            delay = self.client.retry.delay(self._failures, retry_after)
            self._backoff_until = time.monotonic() + delay
            counters.add(failed_batches=1)
            if self._failures == 1 or self._failures % 100 == 0:
                # Once per outage (and now and then during a long one), not once per batch.
                log.warning(
                    "edgemetrics: sending batch %s failed (%s); %d failures in a row, "
                    "next attempt in %.1f s; batches go to the spool meanwhile",
                    batch.batch_id,
                    exc,
                    self._failures,
                    delay,
                )
            return "retry"
        counters.observe_latency((time.perf_counter() - started) * 1000.0)
        if self._failures:
            log.warning("edgemetrics: the sink answers again after %d failures", self._failures)
        n = len(batch)
        counters.add(
            exported=n - rejected,
            rejected=rejected,
            batches=1,
            batch_events=n,
        )
        self._failures = 0
        self._backoff_until = 0.0
        return "ok"

    # --- the spool -----------------------------------------------------------------

    def _spool_batch(self, batch: Batch, *, reason: str, attempts: int = 0) -> None:
        spool = self.client.spool
        counters = self.client.counters
        if spool is None:
            counters.add(dropped_retries_exhausted=len(batch))
            return
        try:
            stored = spool.put(
                batch.batch_id,
                batch.gzipped_body(),
                events=len(batch),
                critical=batch.critical,
                attempts=attempts,
            )
        except SpoolError as exc:
            counters.add(dropped_spool_error=len(batch), spool_errors=1)
            now = time.monotonic()
            if now - self._spool_error_logged > 10.0:
                self._spool_error_logged = now
                log.error(
                    "edgemetrics: %s; dropped a batch of %d events (%s). Counted in "
                    "dropped_spool_error; the host app is unaffected.",
                    exc,
                    len(batch),
                    reason,
                )
            return
        if stored:
            counters.add(spooled_batches=1, spooled_events=len(batch))
            self._spool_work = True
        else:
            counters.add(dropped_spool_full=len(batch))

    def _spool_or_drop(self, events: list[Event | WireEvent], *, reason: str) -> None:
        for batch in self._batches(events):
            self._spool_batch(batch, reason=reason)

    def _replay_one(self) -> bool:
        """Send up to ``max_in_flight`` of the oldest spooled batches; True if any went."""
        spool = self.client.spool
        if spool is None or time.monotonic() < self._backoff_until:
            return False
        now = time.monotonic()
        if not self._spool_work:
            # Other processes sharing the directory may have spooled: look now and then.
            if now < self._next_spool_check:
                return False
            self._next_spool_check = now + self.client.flush_interval
        try:
            rows = spool.claim(self.client.max_in_flight)
        except SpoolError as exc:
            log.error("edgemetrics: cannot read the spool: %s", exc)
            self.client.counters.add(spool_errors=1)
            # Look again at the next flush interval rather than spin on a broken spool.
            self._spool_work = False
            self._next_spool_check = now + self.client.flush_interval
            return False
        if not rows:
            self._spool_work = False
            return False
        if self._pool is None or len(rows) == 1:
            outcomes = [self._replay_row(row) for row in rows]
        else:
            try:
                outcomes = list(self._pool.map(self._replay_row, rows))
            except RuntimeError:  # the pool is shut down (exit)
                outcomes = [self._replay_row(row) for row in rows]
        return any(outcomes)

    def _replay_row(self, row: SpooledBatch) -> bool:
        spool = self.client.spool
        assert spool is not None
        batch = Batch(batch_id=row.batch_id, body=row.body, count=row.events)
        outcome = self._send(batch, retry=row.attempts > 1)
        try:
            if outcome == "retry":
                spool.release([row.batch_id])
                return False
            spool.ack([row.batch_id])
        except SpoolError as exc:
            log.error("edgemetrics: spool bookkeeping failed: %s", exc)
            return False
        if outcome == "ok":
            self.client.counters.add(replayed_batches=1, replayed_events=row.events)
        return True
