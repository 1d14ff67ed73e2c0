"""Where compiled SQL runs: Cloudflare's AE SQL API, or the embedded DuckDB store.

A backend has a ``dialect`` (``ae`` or ``duckdb``), a ``name`` (part of cache keys) and
``run(sql) -> list[dict]``.

>>> import tempfile, os
>>> from edgemetrics.store import EmbeddedStore
>>> backend = EmbeddedBackend(EmbeddedStore(os.path.join(tempfile.mkdtemp(), "e.duckdb")))
>>> backend.run("SELECT 1 AS one")
[{'one': 1}]
>>> backend.close()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import httpx

from edgemetrics.query.model import QueryError


class BackendError(RuntimeError):
    """A backend could not answer."""


class BackendAuthError(BackendError):
    """The SQL API refused the account id or token."""


class BackendQueryError(BackendError, QueryError):
    """The SQL API rejected the SQL text."""


class BackendTimeout(BackendError):
    """The SQL API did not answer in time."""


class BackendUnavailable(BackendError):
    """The SQL API kept failing with 5xx answers."""


class Backend(Protocol):
    dialect: str
    name: str

    def run(self, sql: str) -> list[dict[str, Any]]: ...


class EmbeddedBackend:
    """Runs DuckDB SQL on an :class:`~edgemetrics.store.EmbeddedStore` (its owning process).

    ``aggregates``: the store's pre-aggregated tables
    (:class:`~edgemetrics.query.aggregates.Aggregates`); by default those its retention
    maintains, if any.
    """

    dialect = "duckdb"

    def __init__(self, store: Any, *, aggregates: Any = None) -> None:
        self.store = store
        self.name = f"duckdb:{store.path}"
        self._aggregates = aggregates
        self._local = threading.local()

    @property
    def aggregates(self) -> Any:
        if self._aggregates is not None:
            return self._aggregates
        return getattr(getattr(self.store, "retention", None), "aggregates", None)

    def run(self, sql: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.store.query(sql)
        return rows

    @contextmanager
    def snapshot(self) -> Iterator[Any]:
        """Every statement this thread runs inside sees one state of the store (a
        transaction), so a query's statements agree even while maintenance commits.
        Yields the thread's cursor, the one :meth:`run` uses."""
        cursor = self.store._cursor()
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        try:
            if depth:  # already inside one
                yield cursor
                return
            cursor.execute("BEGIN TRANSACTION").fetchall()
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK").fetchall()
                raise
            cursor.execute("COMMIT").fetchall()
        finally:
            self._local.depth = depth

    def close(self) -> None:
        self.store.close()


CLOUDFLARE_API = "https://api.cloudflare.com/client/v4"


class CloudflareBackend:
    """Cloudflare's Analytics Engine SQL API: ``POST /accounts/{id}/analytics_engine/sql``.

    The SQL is sent as the body with ``FORMAT JSON`` appended; the answer's ``data`` list is
    returned. 401/403 raise :class:`BackendAuthError`; other 4xx :class:`BackendQueryError`
    with the API's message; a timeout :class:`BackendTimeout`; 5xx and connection failures
    are retried ``retries`` times with exponential backoff, then :class:`BackendUnavailable`.

    >>> CloudflareBackend("acc", "tok").url
    'https://api.cloudflare.com/client/v4/accounts/acc/analytics_engine/sql'
    """

    dialect = "ae"

    def __init__(
        self,
        account_id: str,
        api_token: str,
        *,
        base_url: str = CLOUDFLARE_API,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not account_id or not api_token:
            raise ValueError("account_id/api_token: both are required [required]")
        self.url = f"{base_url.rstrip('/')}/accounts/{account_id}/analytics_engine/sql"
        self.name = f"ae:{account_id}"
        self.retries = retries
        self.backoff = backoff
        self._client = httpx.Client(
            timeout=timeout,
            headers={"Authorization": f"Bearer {api_token}"},
            transport=transport,
        )

    def run(self, sql: str) -> list[dict[str, Any]]:
        body = sql.rstrip().rstrip(";") + " FORMAT JSON"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._client.post(self.url, content=body.encode("utf-8"))
            except httpx.TimeoutException as exc:
                raise BackendTimeout(f"AE SQL API: no answer within the timeout ({exc})") from exc
            except httpx.TransportError as exc:
                last = f"connection failed: {exc}"
                continue
            if response.status_code in (401, 403):
                raise BackendAuthError(
                    f"AE SQL API: {response.status_code}: check the account id and that the "
                    f"token has Account Analytics Read ({response.text[:200]})"
                )
            if response.status_code >= 500:
                last = f"{response.status_code}: {response.text[:200]}"
                continue
            if response.status_code >= 400:
                raise BackendQueryError(f"AE SQL API rejected the query: {response.text[:500]}")
            try:
                payload = response.json()
                data = payload["data"]
            except (ValueError, KeyError, TypeError) as exc:
                raise BackendError(
                    f"AE SQL API: unexpected answer {response.text[:200]!r}"
                ) from exc
            return list(data)
        raise BackendUnavailable(f"AE SQL API: failed after {self.retries + 1} attempts ({last})")

    def close(self) -> None:
        self._client.close()
