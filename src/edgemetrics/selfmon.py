"""Self-monitoring: what the pipeline did, kept as counters and exported as ``PipelineHealth``.

Counters are cumulative for the life of the process; :func:`health_event` snapshots them
(with the buffer depth and the spool's depth and age) into a ``pipeline_health`` event
that travels through the same pipeline as every other event.

>>> counters = Counters()
>>> counters.add(tracked=3, batches=1, batch_events=3)
>>> counters.observe_latency(12.5)
>>> event = health_event(counters, source="exporter", buffer_depth=0)
>>> event.events_in, event.batch_size_avg, event.export_latency_ms
(3, 3.0, 12.5)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgemetrics.events import PipelineHealth

if TYPE_CHECKING:
    from edgemetrics.spool import SpoolStats


@dataclass
class Counters:
    """Cumulative pipeline counters; :meth:`add` is thread-safe."""

    tracked: int = 0
    exported: int = 0
    batches: int = 0
    batch_events: int = 0
    retries: int = 0
    failed_batches: int = 0
    spooled_batches: int = 0
    spooled_events: int = 0
    replayed_batches: int = 0
    replayed_events: int = 0
    durable_events: int = 0
    durable_failures: int = 0
    rejected: int = 0
    rejected_batches: int = 0
    dropped_buffer_full: int = 0
    dropped_spool_full: int = 0
    dropped_spool_error: int = 0
    dropped_invalid: int = 0
    dropped_retries_exhausted: int = 0
    # Not a loss: events of users who opted out, dropped on purpose before export.
    dropped_opted_out: int = 0
    spool_errors: int = 0
    export_latency_ms_total: float = 0.0
    export_latency_samples: int = 0
    export_latency_ms_max: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        """Add to several counters at once."""
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def observe_latency(self, ms: float) -> None:
        """Record one export's round-trip time."""
        with self._lock:
            self.export_latency_ms_total += ms
            self.export_latency_samples += 1
            self.export_latency_ms_max = max(self.export_latency_ms_max, ms)

    def snapshot(self) -> dict[str, Any]:
        """A plain dict copy (no lock object)."""
        with self._lock:
            return {k: v for k, v in vars(self).items() if k != "_lock"}

    @property
    def dropped(self) -> dict[str, int]:
        """Drops by reason."""
        return {
            "buffer_full": self.dropped_buffer_full,
            "spool_full": self.dropped_spool_full,
            "spool_error": self.dropped_spool_error,
            "invalid": self.dropped_invalid,
            "retries_exhausted": self.dropped_retries_exhausted,
            "opted_out": self.dropped_opted_out,
        }

    def reset_after_fork(self) -> None:
        """A forked child starts its own count (the parent reports its own)."""
        fresh = Counters()
        for name, value in vars(fresh).items():
            setattr(self, name, value)


def _clip(value: float, high: float) -> float:
    return min(max(value, 0.0), high)


def health_event(
    counters: Counters,
    *,
    source: str,
    buffer_depth: int,
    spool: SpoolStats | None = None,
) -> PipelineHealth:
    """A ``PipelineHealth`` event from the counters and the current depths."""
    c = counters.snapshot()
    samples = c["export_latency_samples"]
    return PipelineHealth(
        source=source,
        events_in=c["tracked"],
        events_exported=c["exported"],
        dropped_buffer_full=c["dropped_buffer_full"],
        dropped_spool_full=c["dropped_spool_full"]
        + c["dropped_spool_error"]
        + (spool.dropped_spool_full if spool else 0),
        dropped_invalid=c["dropped_invalid"] + c["dropped_retries_exhausted"],
        dropped_expired=spool.dropped_expired if spool else 0,
        rejected=c["rejected"],
        retries=c["retries"],
        buffer_depth=buffer_depth,
        spool_depth=spool.events if spool else 0,
        spool_age_s=_clip(spool.oldest_age_s if spool else 0.0, 7 * 24 * 3600),
        export_latency_ms=_clip(
            c["export_latency_ms_total"] / samples if samples else 0.0, 7 * 24 * 3600 * 1000
        ),
        batches=c["batches"],
        batch_size_avg=c["batch_events"] / c["batches"] if c["batches"] else 0.0,
    )
