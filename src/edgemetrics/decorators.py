"""Decorators (and context managers) that turn host code into commerce and job events.

Built on wrapt: the decorated function keeps its name, signature, docstring and
``inspect`` answers; methods, static and class methods and async functions work alike.
An exception from the host code propagates unchanged: a job records ``outcome=error``
first, a purchase or refund records nothing (no money moved).

>>> import edgemetrics
>>> from edgemetrics.sinks import MemorySink
>>> sink = MemorySink()
>>> _ = edgemetrics.configure(sink=sink, flush_interval=0.05)
>>> @track_purchase(lambda result, *args, **kwargs: result)
... def buy(content_id):
...     return {"amount_minor": 499, "currency": "EUR", "transaction_id": "tx1",
...             "content_id": content_id}
>>> buy("v1")["amount_minor"]
499
>>> @track_job(queue="media")
... def transcode(video_id):
...     return video_id
>>> transcode("v1")
'v1'
>>> edgemetrics.flush() and [(e.type, getattr(e, "queue", None)) for e in sink.events]
[('purchase', None), ('job', 'media')]
>>> edgemetrics.shutdown()
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import wrapt

from edgemetrics import track, track_durable
from edgemetrics.events import Job, JobOutcome, Purchase, Refund

__all__ = ["CommerceRecorder", "JobTracker", "track_job", "track_purchase", "track_refund"]

F = TypeVar("F", bound=Callable[..., Any])
Extract = Callable[..., Mapping[str, Any] | None]
EnqueuedAt = datetime | float | Callable[..., datetime | float | None] | None


def _is_async(wrapped: Any) -> bool:
    return inspect.iscoroutinefunction(wrapped)


class CommerceRecorder:
    """Records a purchase or refund from a handler's result, as a decorator or a context.

    As a decorator, ``extract(result, *args, **kwargs)`` maps what the handler returned and
    was given to the event's fields (``amount_minor``, ``currency``, ``transaction_id``,
    ``content_id``, ``creator_id``...); returning None records nothing (a declined
    payment). As a context manager, call :meth:`record` inside the block; the event is
    tracked when the block ends without an exception.

    >>> import edgemetrics
    >>> from edgemetrics.sinks import MemorySink
    >>> sink = MemorySink()
    >>> _ = edgemetrics.configure(sink=sink)
    >>> with track_refund() as refund:
    ...     refund.record(amount_minor=100, currency="USD", transaction_id="r1")
    >>> edgemetrics.flush() and sink.events[0].type
    'refund'
    >>> edgemetrics.shutdown()
    """

    def __init__(self, model: type[Purchase] | type[Refund], extract: Extract | None) -> None:
        self.model = model
        self.extract = extract
        self._fields: dict[str, Any] | None = None

    def record(self, **fields: Any) -> None:
        """Give the event's fields (context-manager use); validated when the block ends."""
        self._fields = fields

    def __enter__(self) -> CommerceRecorder:
        self._fields = None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self._fields is not None:
            # Money is durable: on disk (spool, fsynced) before the handler returns.
            track_durable(self.model(**self._fields))

    def _track_result(self, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        assert self.extract is not None
        fields = self.extract(result, *args, **kwargs)
        if fields is not None:
            track_durable(self.model(**fields))

    def __call__(self, function: F) -> F:
        if self.extract is None:
            raise TypeError(
                f"track_{self.model.model_fields['type'].default}: as a decorator it needs "
                "extract(result, *args, **kwargs) returning the event's fields"
            )
        recorder = self

        @wrapt.decorator
        def wrapper(
            wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            if _is_async(wrapped):

                async def run() -> Any:
                    result = await wrapped(*args, **kwargs)
                    recorder._track_result(result, args, kwargs)
                    return result

                return run()
            result = wrapped(*args, **kwargs)
            recorder._track_result(result, args, kwargs)
            return result

        return wrapper(function)  # type: ignore[return-value]


def track_purchase(extract: Extract | None = None) -> CommerceRecorder:
    """Record a purchase when the decorated handler returns (see :class:`CommerceRecorder`).

    >>> @track_purchase(lambda order, *a, **k: {"amount_minor": order["cents"],
    ...                 "currency": "EUR", "transaction_id": order["id"]})
    ... def checkout(cart):
    ...     "Charge the cart."
    ...     return {"cents": 999, "id": "o-1"}
    >>> checkout.__name__, checkout.__doc__, str(inspect.signature(checkout))
    ('checkout', 'Charge the cart.', '(cart)')
    """
    return CommerceRecorder(Purchase, extract)


def track_refund(extract: Extract | None = None) -> CommerceRecorder:
    """Record a refund when the decorated handler returns (see :class:`CommerceRecorder`).

    >>> @track_refund(lambda result, tx, cents: {"amount_minor": cents, "currency": "EUR",
    ...               "transaction_id": f"r-{tx}", "original_transaction_id": tx})
    ... def refund(tx, cents):
    ...     return True
    >>> refund("o-1", 999)
    True
    """
    return CommerceRecorder(Refund, extract)


class JobTracker:
    """Times a job and records a ``job`` event: as a decorator or a context manager.

    ``name`` defaults to the function's qualified name; ``enqueued_at`` (a datetime, epoch
    seconds, or ``callable(*args, **kwargs)`` giving one) yields the queue delay. Inside a
    ``with`` block, set ``.retries`` or ``.outcome`` on the tracker if the host knows them.
    As a context manager a tracker holds the state of one block: call ``track_job(...)``
    for each block rather than sharing one tracker between threads. As a decorator it
    keeps no per-call state and is safe from any thread.

    >>> import edgemetrics
    >>> from edgemetrics.sinks import MemorySink
    >>> sink = MemorySink()
    >>> _ = edgemetrics.configure(sink=sink)
    >>> with track_job("nightly-report", queue="cron") as job:
    ...     job.retries = 1
    >>> edgemetrics.flush() and (sink.events[0].job_name, sink.events[0].retries)
    ('nightly-report', 1)
    >>> edgemetrics.shutdown()
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        queue: str = "default",
        service: str = "app",
        enqueued_at: EnqueuedAt = None,
    ) -> None:
        self.name = name
        self.queue = queue
        self.service = service
        self.enqueued_at = enqueued_at
        self.retries = 0
        self.outcome: JobOutcome | None = None
        self._start = 0.0
        self._delay_ms = 0.0

    # --- context manager -----------------------------------------------------------

    def __enter__(self) -> JobTracker:
        if self.name is None:
            raise TypeError("track_job: as a context manager it needs a job name")
        self.retries = 0
        self.outcome = None
        enqueued = self.enqueued_at() if callable(self.enqueued_at) else self.enqueued_at
        self._delay_ms = _delay_ms(enqueued)
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        outcome = JobOutcome.error if exc_type is not None else (self.outcome or JobOutcome.success)
        self._emit(str(self.name), outcome, self._start, self._delay_ms, self.retries)

    # --- decorator -----------------------------------------------------------------

    def __call__(self, function: F) -> F:
        tracker = self
        job_name = self.name or getattr(function, "__qualname__", None) or repr(function)

        def delay(args: tuple[Any, ...], kwargs: dict[str, Any]) -> float:
            source = tracker.enqueued_at
            return _delay_ms(source(*args, **kwargs) if callable(source) else source)

        @wrapt.decorator
        def wrapper(
            wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            if _is_async(wrapped):

                async def run() -> Any:
                    delay_ms = delay(args, kwargs)
                    start = time.perf_counter()
                    try:
                        result = await wrapped(*args, **kwargs)
                    except BaseException:
                        tracker._emit(job_name, JobOutcome.error, start, delay_ms, 0)
                        raise
                    tracker._emit(job_name, JobOutcome.success, start, delay_ms, 0)
                    return result

                return run()
            delay_ms = delay(args, kwargs)
            start = time.perf_counter()
            try:
                result = wrapped(*args, **kwargs)
            except BaseException:
                tracker._emit(job_name, JobOutcome.error, start, delay_ms, 0)
                raise
            tracker._emit(job_name, JobOutcome.success, start, delay_ms, 0)
            return result

        return wrapper(function)  # type: ignore[return-value]

    def _emit(
        self, name: str, outcome: JobOutcome, start: float, delay_ms: float, retries: int
    ) -> None:
        track(
            Job(
                service=self.service,
                job_name=name[:64],
                queue=self.queue,
                outcome=outcome,
                duration_ms=(time.perf_counter() - start) * 1000.0,
                queue_delay_ms=delay_ms,
                retries=retries,
            )
        )


def track_job(
    name: str | None = None,
    *,
    queue: str = "default",
    service: str = "app",
    enqueued_at: EnqueuedAt = None,
) -> JobTracker:
    """Time a job: ``@track_job(queue="media")`` or ``with track_job("name"):``.

    See :class:`JobTracker`.

    >>> @track_job()
    ... async def publish(post_id):
    ...     return post_id
    >>> import asyncio
    >>> asyncio.run(publish("p1")), inspect.iscoroutinefunction(publish)
    ('p1', True)
    """
    return JobTracker(name, queue=queue, service=service, enqueued_at=enqueued_at)


def _delay_ms(enqueued: datetime | float | None) -> float:
    """Milliseconds since the enqueue time (clamped at 0: clocks of two hosts may differ)."""
    if enqueued is None:
        return 0.0
    seconds = enqueued.timestamp() if isinstance(enqueued, datetime) else float(enqueued)
    return max(0.0, (time.time() - seconds) * 1000.0)
