"""edgemetrics: analytics for creator media platforms.

>>> import edgemetrics
>>> from edgemetrics.sinks import MemorySink
>>> sink = MemorySink()
>>> _ = edgemetrics.configure(sink=sink, flush_interval=0.05)
>>> edgemetrics.track(edgemetrics.events.View(content_id="v1"))
>>> edgemetrics.flush()
True
>>> len(sink.events)
1
>>> edgemetrics.shutdown()
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path
from typing import Any

from edgemetrics import events
from edgemetrics.client import Batch, Client, Sink
from edgemetrics.events import Event, InvalidEvent, parse_event
from edgemetrics.privacy import Pseudonymizer

__all__ = [
    "Batch",
    "Client",
    "Event",
    "InvalidEvent",
    "Sink",
    "configure",
    "events",
    "flush",
    "get_client",
    "parse_event",
    "shutdown",
    "track",
    "track_durable",
]

_client: Client | None = None
_lock = threading.Lock()


def configure(
    *,
    sink: Sink | None = None,
    store_path: str | Path | None = None,
    url: str | None = None,
    secret: str | None = None,
    pseudonymizer: Pseudonymizer | str | Path | None = None,
    **options: Any,
) -> Client:
    """Set up the process-wide client.

    Give a ``sink``; or ``url`` and ``secret`` to ship to the Worker or the local collector
    (``edgemetrics serve``); or ``store_path`` to write the embedded store in-process.
    Options go to :class:`edgemetrics.client.Client` (``flush_interval``, ``max_batch``,
    ``spool`` (a directory), ...). Calling it again replaces the client after flushing the
    old one.

    ``pseudonymizer`` is the privacy key store (:mod:`edgemetrics.privacy`): a
    :class:`~edgemetrics.privacy.Pseudonymizer` or the path of its SQLite file, shared by
    the host's processes. User ids are always pseudonymised on the exporter thread before
    they leave the process; without a key store the key lives in memory and pseudonyms are
    stable for this process's life only.
    """
    global _client
    if pseudonymizer is not None and not isinstance(pseudonymizer, Pseudonymizer):
        pseudonymizer = Pseudonymizer(pseudonymizer)
    if pseudonymizer is not None:
        options["pseudonymizer"] = pseudonymizer
    if sink is None and url is not None:
        from edgemetrics.http_sink import HttpSink

        if secret is None:
            raise ValueError("configure: url= needs secret= (the shared signing secret)")
        sink = HttpSink(url, secret=secret)
    if sink is None:
        if store_path is None:
            raise ValueError("configure: give sink=, url= and secret=, or store_path=")
        from edgemetrics.retention import Retention
        from edgemetrics.sinks import StoreSink
        from edgemetrics.store import EmbeddedStore

        # This process owns the store: it enforces retention (90 days raw, 2 years rollups).
        sink = StoreSink(EmbeddedStore(store_path, retention=Retention()), close_store=True)
    with _lock:
        old, _client = _client, Client(sink, **options)
    if old is not None:
        old.close()
    return _client


def get_client() -> Client | None:
    """The configured client, or None before :func:`configure`."""
    return _client


def track(event: Event) -> None:
    """Record one event. A no-op until :func:`configure` is called; never does I/O."""
    client = _client
    if client is not None:
        client.track(event)
    elif not isinstance(event, Event):
        raise TypeError(f"event: expected an edgemetrics event model, got {type(event).__name__}")


def track_durable(event: Event) -> bool:
    """Record an event that must survive a crash (purchases, refunds).

    With a spool configured, the event is fsynced to it before this returns (True);
    otherwise it is queued like :func:`track` (False). A no-op until :func:`configure`.
    """
    client = _client
    if client is not None:
        return client.track_durable(event)
    if not isinstance(event, Event):
        raise TypeError(f"event: expected an edgemetrics event model, got {type(event).__name__}")
    return False


def flush(timeout: float = 10.0) -> bool:
    """Ship what is buffered; True when everything left the buffer in time."""
    client = _client
    return client.flush(timeout) if client is not None else True


def shutdown(timeout: float = 10.0) -> None:
    """Flush with a deadline and stop the exporter thread."""
    global _client
    with _lock:
        client, _client = _client, None
    if client is not None:
        client.close(timeout)


atexit.register(shutdown)
