"""RQ: every job a worker performs becomes a job event (duration, queue delay, outcome).

``setup()`` wraps ``Worker.perform_job`` once per process (before the worker starts)::

    from edgemetrics.integrations import rq as em_rq
    em_rq.setup(service="worker")

The queue delay runs from RQ's ``enqueued_at`` to the start of the run. A forking worker
runs each job in a work horse that leaves with ``os._exit``, skipping exit handlers, so
the horse flushes its events before it returns.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import wrapt

import edgemetrics
from edgemetrics import track
from edgemetrics.events import Job, JobOutcome
from edgemetrics.optional_deps import require

_state: dict[str, Any] = {}


def setup(*, service: str = "app", flush_timeout: float = 5.0) -> None:
    """Time every job RQ workers in this process perform (idempotent)."""
    worker_module = require("rq.worker", extra="rq", integration="rq")
    _state["service"] = service
    _state["flush_timeout"] = flush_timeout
    if _state.get("patched"):
        return
    wrapt.wrap_function_wrapper(worker_module.BaseWorker, "perform_job", _perform_job)
    _state["patched"] = True


def _perform_job(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    job = args[0] if args else kwargs.get("job")
    queue = args[1] if len(args) > 1 else kwargs.get("queue")
    start = time.perf_counter()
    delay_ms = _delay_ms(getattr(job, "enqueued_at", None))
    succeeded = False
    try:
        result = wrapped(*args, **kwargs)
        succeeded = bool(result)
        return result
    finally:
        try:
            retrying = bool(getattr(job, "retries_left", None)) and not succeeded
            track(
                Job(
                    service=_state.get("service", "app"),
                    job_name=str(getattr(job, "func_name", "job"))[:64],
                    queue=str(getattr(queue, "name", None) or getattr(job, "origin", "default"))[
                        :64
                    ],
                    outcome=JobOutcome.success
                    if succeeded
                    else (JobOutcome.retry if retrying else JobOutcome.error),
                    duration_ms=(time.perf_counter() - start) * 1000.0,
                    queue_delay_ms=delay_ms,
                    retries=int(getattr(job, "number_of_retries", None) or 0),
                )
            )
            if getattr(instance, "_is_horse", False):
                edgemetrics.flush(_state.get("flush_timeout", 5.0))
        except Exception:  # instrumentation must never break the worker
            pass


def _delay_ms(enqueued_at: datetime | None) -> float:
    if enqueued_at is None:
        return 0.0
    if enqueued_at.tzinfo is None:
        enqueued_at = enqueued_at.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - enqueued_at).total_seconds() * 1000.0)
