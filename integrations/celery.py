"""Celery: every task a worker runs becomes a job event (duration, queue delay, outcome, retries).

``setup()`` connects to Celery's signals, in the producer (to stamp the enqueue time into
the message headers) and in the worker (to time the task)::

    from edgemetrics.integrations import celery as em_celery
    em_celery.setup(service="worker")

Queue delay is the time from publish to the start of the run (clamped at 0 when clocks
of two hosts disagree). A retried run is recorded with ``outcome=retry``; ``retries`` is
Celery's retry count of the run.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from edgemetrics import track
from edgemetrics.events import Job, JobOutcome
from edgemetrics.optional_deps import require

ENQUEUED_HEADER = "edgemetrics_enqueued_at"

_lock = threading.Lock()
_connected: dict[str, Any] = {}


def setup(*, service: str = "app") -> None:
    """Connect to Celery's signals (once per process; later calls change the service)."""
    signals = require("celery.signals", extra="celery", integration="celery")
    with _lock:
        _connected["service"] = service
        if _connected.get("done"):
            return
        signals.before_task_publish.connect(_stamp_enqueue_time, weak=False)
        signals.task_prerun.connect(_started, weak=False)
        signals.task_postrun.connect(_finished, weak=False)
        signals.task_retry.connect(_retried, weak=False)
        _connected["done"] = True


def _stamp_enqueue_time(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        headers.setdefault(ENQUEUED_HEADER, time.time())


def _runs(task: Any) -> dict[str, tuple[float, float]]:
    # Per-task-id start times, kept on the request context of this worker thread.
    request = task.request
    runs = getattr(request, "_edgemetrics_runs", None)
    if runs is None:
        runs = {}
        request._edgemetrics_runs = runs
    return runs


def _started(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task is None:
        return
    enqueued = task.request.get(ENQUEUED_HEADER) or (task.request.headers or {}).get(
        ENQUEUED_HEADER
    )
    delay_ms = max(0.0, (time.time() - float(enqueued)) * 1000.0) if enqueued else 0.0
    _runs(task)[str(task_id)] = (time.perf_counter(), delay_ms)


def _retried(request: Any = None, sender: Any = None, **_: Any) -> None:
    if request is not None:
        request._edgemetrics_retrying = True


def _finished(
    task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
) -> None:
    if task is None:
        return
    started = _runs(task).pop(str(task_id), None)
    if started is None:
        return
    start, delay_ms = started
    request = task.request
    if state == "RETRY" or getattr(request, "_edgemetrics_retrying", False):
        outcome = JobOutcome.retry
    elif state in ("FAILURE", "REJECTED", "REVOKED"):
        outcome = JobOutcome.error
    else:
        outcome = JobOutcome.success
    try:
        queue = (request.delivery_info or {}).get("routing_key") or "default"
        track(
            Job(
                service=_connected.get("service", "app"),
                job_name=str(task.name)[:64],
                queue=str(queue)[:64],
                outcome=outcome,
                duration_ms=(time.perf_counter() - start) * 1000.0,
                queue_delay_ms=delay_ms,
                retries=int(request.retries or 0),
            )
        )
    except Exception:  # instrumentation must never break the worker
        pass
