"""The HTTP sink: ``POST /v1/batch`` to the Worker or the local collector, signed and gzipped.

A small pool of keep-alive connections (one per request in flight), connect and read
timeouts, and a clear split of failures: a transport error, a 5xx or a 429 raises
:class:`~edgemetrics.client.SinkError` (retried later with the same batch id;
``retry_after`` carries the receiver's ``Retry-After``), any other 4xx raises
:class:`~edgemetrics.client.BatchRejected` (not retried: sending it again cannot succeed).

The requests are made with the standard library's ``http.client``, not httpx: the sink
sends one kind of request to one endpoint, and httpx's generality costs ~0.5 ms of CPU
per request on the exporter's threads (2 us per event at 250 events a batch, more than
serialising and gzipping them) where ``http.client`` costs ~0.1 ms. HTTPS verifies
certificates with the system's trust store; ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``
are honoured as httpx would (a CONNECT tunnel for https, an absolute URI for http).

>>> sink = HttpSink("http://127.0.0.1:9/v1/batch", secret="s", timeout=0.5)
>>> from edgemetrics.client import Batch, SinkError
>>> from edgemetrics.events import View
>>> try:
...     sink.write(Batch([View(content_id="v1")]))
... except SinkError as exc:
...     print(exc.retry_after is None, "transport" in str(exc))
True True
>>> sink.close()
"""

from __future__ import annotations

import email.utils
import http.client
import ssl
import threading
import time
import urllib.parse
import urllib.request

import orjson

from edgemetrics.client import Batch, BatchRejected, SinkError
from edgemetrics.signing import sign
from edgemetrics.wire import MAX_EVENTS_HEADER, MAX_EVENTS_PER_BODY

# A reused keep-alive connection the server has closed meanwhile fails like this before
# any answer: the request is sent again on a fresh connection (if the server did read it
# before hanging up, the receivers drop the second copy by its batch id).
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date).

    >>> parse_retry_after("3"), parse_retry_after(None), parse_retry_after("soon")
    (3.0, None, None)
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_max_events(value: str | None) -> int | None:
    """The receiver's per-request event limit from :data:`MAX_EVENTS_HEADER`, within the
    protocol's 1 to 5,000; None when absent or not a number.

    >>> parse_max_events("5000"), parse_max_events("99999"), parse_max_events(None)
    (5000, 5000, None)
    >>> parse_max_events("0"), parse_max_events("many")
    (None, None)
    """
    if not value or not value.strip().isdigit():
        return None
    n = int(value)
    return min(n, MAX_EVENTS_PER_BODY) if n >= 1 else None


class HttpSink:
    """Ships batches to an ingest endpoint (``.../v1/batch``) with the shared secret."""

    reads = "body"  # only the gzipped body: the exporter may skip models (see Sink)

    def __init__(
        self,
        url: str,
        *,
        secret: str | bytes,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        max_connections: int = 4,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url: must start with http:// or https://, got {url!r}")
        if not secret:
            raise ValueError("secret: the shared signing secret must not be empty")
        parts = urllib.parse.urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"url: has no host: {url!r}")
        self.url = url
        self._secret = secret
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._proxy = _proxy_for(url, parts.hostname)
        if self._proxy is not None and not self._https:
            self._target = url  # a plain-HTTP proxy takes the absolute URI
        self._ssl = ssl.create_default_context() if self._https else None
        self._max_idle = max(1, max_connections)
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []
        self._inherited: list[http.client.HTTPConnection] = []
        # The most events per request the receiver said it takes (its last answer), or
        # None while it has said nothing.
        self.max_events: int | None = None

    # --- connections ---------------------------------------------------------------

    def _connect(self) -> http.client.HTTPConnection:
        host, port = self._proxy or (self._host, self._port)
        conn: http.client.HTTPConnection
        if self._https:
            conn = http.client.HTTPSConnection(
                host, port, timeout=self._connect_timeout, context=self._ssl
            )
            if self._proxy is not None:
                conn.set_tunnel(self._host, self._port)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self._connect_timeout)
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(self._timeout)  # connect timeout for connecting, then this
        return conn

    def _checkout(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def _checkin(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def _post(
        self, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes, str | None, str | None]:
        """One request: status, body, Retry-After and the receiver's per-request event
        limit (:data:`MAX_EVENTS_HEADER`); raises OSError/HTTPException."""
        while True:
            conn, reused = self._checkout()
            try:
                conn.request("POST", self._target, body=body, headers=headers)
                response = conn.getresponse()
                content = response.read()
            except _STALE:
                conn.close()
                if reused:
                    continue  # the server closed it while idle; try a fresh connection
                raise
            except BaseException:
                conn.close()
                raise
            if response.will_close:
                conn.close()
            else:
                self._checkin(conn)
            return (
                response.status,
                content,
                response.getheader("Retry-After"),
                response.getheader(MAX_EVENTS_HEADER),
            )

    # --- the sink ------------------------------------------------------------------

    def write(self, batch: Batch) -> int:
        """Send one batch; returns how many events the receiver rejected one by one."""
        body = batch.gzipped_body()
        headers = sign(body, self._secret)
        headers["Content-Type"] = "application/json"
        headers["Content-Encoding"] = "gzip"
        headers["User-Agent"] = "edgemetrics-python"
        try:
            status, content, retry_after, max_events = self._post(body, headers)
        except (OSError, http.client.HTTPException) as exc:
            raise SinkError(f"transport error to {self.url}: {exc!r}") from exc
        if status in (200, 202):
            self.max_events = parse_max_events(max_events)
            try:
                answer = orjson.loads(content)
                return len(answer.get("rejected") or ())
            except (orjson.JSONDecodeError, AttributeError):
                return 0
        if status == 429 or status >= 500:
            raise SinkError(
                f"{self.url} answered {status}",
                retry_after=parse_retry_after(retry_after),
                status=status,
            )
        text = content[:300].decode("utf-8", "replace")
        raise BatchRejected(f"{self.url} refused the batch: {status} {text}", status)

    def reset_after_fork(self) -> None:
        """The child gets its own connections; the parent's sockets are left untouched."""
        # Not closed here: the parent still uses them (the Client keeps the old sink's
        # objects referenced, so they are not collected and closed either).
        self._lock = threading.Lock()
        self._inherited = self._idle
        self._idle = []

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _proxy_for(url: str, host: str) -> tuple[str, int] | None:
    """The (host, port) of the proxy the environment names for ``url``, or None."""
    if urllib.request.proxy_bypass(host):
        return None
    scheme = urllib.parse.urlsplit(url).scheme
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy:
        return None
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or 80
