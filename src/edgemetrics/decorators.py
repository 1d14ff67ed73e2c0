"""Decorators that turn a host function's result into commerce events.

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
>>> edgemetrics.flush() and sink.events[0].amount_minor
499
>>> edgemetrics.shutdown()
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import wrapt

from edgemetrics import track_durable
from edgemetrics.events import Purchase

F = TypeVar("F", bound=Callable[..., Any])
Extract = Callable[..., Mapping[str, Any] | None]


def track_purchase(extract: Extract) -> Callable[[F], F]:
    """Record a purchase each time the decorated handler returns.

    ``extract(result, *args, **kwargs)`` maps the handler's result and arguments to the
    Purchase fields (``amount_minor``, ``currency``, ``transaction_id``, ``content_id``...);
    returning None records nothing (e.g. a declined payment). Works on sync and async
    functions; the signature is preserved.
    """

    def record(result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        fields = extract(result, *args, **kwargs)
        if fields is not None:
            # Money: on disk (fsynced) before the handler returns, when a spool is set up.
            track_durable(Purchase(**fields))

    @wrapt.decorator
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if inspect.iscoroutinefunction(wrapped):

            async def run() -> Any:
                result = await wrapped(*args, **kwargs)
                record(result, args, kwargs)
                return result

            return run()
        result = wrapped(*args, **kwargs)
        record(result, args, kwargs)
        return result

    return wrapper  # type: ignore[return-value]
