"""The HTTP sink: ``POST /v1/batch`` to the Worker or the local collector, signed and gzipped.

One keep-alive connection (httpx), connect and read timeouts, and a clear split of
failures: a transport error, a 5xx or a 429 raises :class:`~edgemetrics.client.SinkError`
(retried later with the same batch id; ``retry_after`` carries the receiver's
``Retry-After``), any other 4xx raises :class:`~edgemetrics.client.BatchRejected` (not
retried: sending it again cannot succeed).

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
import time

import httpx
import orjson

from edgemetrics.client import Batch, BatchRejected, SinkError
from edgemetrics.signing import sign


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


class HttpSink:
    """Ships batches to an ingest endpoint (``.../v1/batch``) with the shared secret."""

    def __init__(
        self,
        url: str,
        *,
        secret: str | bytes,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url: must start with http:// or https://, got {url!r}")
        if not secret:
            raise ValueError("secret: the shared signing secret must not be empty")
        self.url = url
        self._secret = secret
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._transport = transport
        self._client = self._new_client()

    def _new_client(self) -> httpx.Client:
        return httpx.Client(
            timeout=self._timeout,
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4, keepalive_expiry=60),
            transport=self._transport,
            headers={"User-Agent": "edgemetrics-python"},
        )

    def write(self, batch: Batch) -> int:
        """Send one batch; returns how many events the receiver rejected one by one."""
        body = batch.gzipped_body()
        headers = sign(body, self._secret)
        headers["Content-Type"] = "application/json"
        headers["Content-Encoding"] = "gzip"
        try:
            response = self._client.post(self.url, content=body, headers=headers)
        except httpx.TransportError as exc:
            raise SinkError(f"transport error to {self.url}: {exc!r}") from exc
        status = response.status_code
        if status in (200, 202):
            try:
                answer = orjson.loads(response.content)
                return len(answer.get("rejected") or ())
            except (orjson.JSONDecodeError, AttributeError):
                return 0
        if status == 429 or status >= 500:
            raise SinkError(
                f"{self.url} answered {status}",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                status=status,
            )
        raise BatchRejected(f"{self.url} refused the batch: {status} {response.text[:300]}", status)

    def reset_after_fork(self) -> None:
        """The child gets its own connections; the parent's sockets are left untouched."""
        self._client = self._new_client()

    def close(self) -> None:
        self._client.close()
