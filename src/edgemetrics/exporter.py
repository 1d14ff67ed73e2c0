"""The exporter thread: batches the buffer, ships it, spools what the sink does not take.

One thread per process. Each cycle it takes up to ``max_batch`` events (never more than
250, AE's per-invocation limit), splits them further when the serialised body would pass
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
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgemetrics.batch import Batch, BatchRejected, SinkError, new_batch_id
from edgemetrics.events import Event
from edgemetrics.spool import SpoolError
from edgemetrics.wire import encode_body, encode_events, gzip_body

if TYPE_CHECKING:
    from edgemetrics.client import Client

log = logging.getLogger("edgemetrics")


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
        return raw * (1.0 - self.jitter * random.random())


class Exporter:
    """The thread that drains one client's buffer; see the module docs."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._in_flight: list[Event] = []
        self._in_flight_raw = False
        self._stopping = False
        self._deadline = float("inf")
        self._failures = 0
        self._backoff_until = 0.0
        self._spool_work = client.spool is not None
        self._next_spool_check = 0.0
        self._next_health = (
            time.monotonic() + client.health_interval if client.health_interval else float("inf")
        )
        self._spool_error_logged = 0.0
        self._thread = threading.Thread(target=self._run, name="edgemetrics-exporter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def spool_has_work(self) -> None:
        self._spool_work = True
        self._wake.set()

    # --- called from other threads ----------------------------------------------

    def drain(self, deadline: float) -> bool:
        """Wait until the buffer is empty and nothing is in flight, or ``deadline``."""
        buffer = self.client._buffer
        with self._idle:
            while buffer or self._in_flight:
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
        if self._thread.is_alive():
            # Stuck in a request past the deadline: spool what is left from this thread.
            # A batch the thread then also delivers is deduplicated by its ids.
            in_flight = list(self._in_flight)
            if self._in_flight_raw:
                # Stuck before the privacy step: never spool a raw user id.
                in_flight = [e for e in in_flight if getattr(e, "user_id", None) is None]
            leftover = in_flight + self._take_all()
            if leftover:
                self._spool_or_drop(leftover, reason="exit deadline passed")

    # --- the thread ----------------------------------------------------------------

    def _run(self) -> None:
        client = self.client
        while True:
            self._wake.wait(client.flush_interval)
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
        now = time.monotonic()
        if now >= self._next_health:
            self._next_health = now + (self.client.health_interval or float("inf"))
            self.client.track(self.client.health())
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
                return

    def _take(self) -> list[Event]:
        buffer = self.client._buffer
        while True:
            n = min(len(buffer), self.client.max_batch)
            out = []
            for _ in range(n):
                try:
                    out.append(buffer.popleft())
                except IndexError:
                    break
            if not out:
                return out
            # In flight before the privacy step (it may touch the key store), so a
            # concurrent flush() never sees an empty buffer and nothing in flight.
            with self._idle:
                self._in_flight = out
                self._in_flight_raw = True
            try:
                kept = self.client.prepare(out)
            finally:
                self._in_flight_raw = False
            if kept:
                return kept
            with self._idle:
                self._in_flight = []
                self._idle.notify_all()

    def _take_all(self) -> list[Event]:
        buffer = self.client._buffer
        out = []
        while True:
            try:
                out.append(buffer.popleft())
            except IndexError:
                return self.client.prepare(out)

    def _batches(self, events: list[Event]) -> list[Batch]:
        """Serialise; split in halves while a body would pass ``max_batch_bytes``."""
        array = encode_events(events)
        if len(array) > self.client.max_batch_bytes and len(events) > 1:
            half = len(events) // 2
            return self._batches(events[:half]) + self._batches(events[half:])
        batch_id = new_batch_id()
        return [
            Batch(events, batch_id=batch_id, body=gzip_body(encode_body(batch_id, array)))
        ]

    def _deliver_live(self, events: list[Event]) -> None:
        for batch in self._batches(events):
            if self._past_deadline():
                self._spool_batch(batch, reason="exit deadline")
                continue
            if self.client.spool is not None and time.monotonic() < self._backoff_until:
                self._spool_batch(batch, reason="sink unavailable")
                continue
            outcome = self._send(batch, retry=False)
            if outcome != "retry":
                continue
            if self.client.spool is not None:
                self._spool_batch(batch, reason="sink failed")
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
            log.error("edgemetrics: batch %s of %d events refused: %s", batch.batch_id, len(batch), exc)
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

    def _spool_batch(self, batch: Batch, *, reason: str) -> None:
        spool = self.client.spool
        counters = self.client.counters
        if spool is None:
            counters.add(dropped_retries_exhausted=len(batch))
            return
        try:
            stored = spool.put(
                batch.batch_id, batch.gzipped_body(), events=len(batch), critical=batch.critical
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

    def _spool_or_drop(self, events: list[Event], *, reason: str) -> None:
        for batch in self._batches(events):
            self._spool_batch(batch, reason=reason)

    def _replay_one(self) -> bool:
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
            rows = spool.claim(1)
        except SpoolError as exc:
            log.error("edgemetrics: cannot read the spool: %s", exc)
            self.client.counters.add(spool_errors=1)
            return False
        if not rows:
            self._spool_work = False
            return False
        row = rows[0]
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
