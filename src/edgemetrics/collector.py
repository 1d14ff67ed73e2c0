"""The local collector: ``POST /v1/batch`` per docs/ingest-protocol.md, into the embedded store.

It is the embedded default's sink (``edgemetrics serve``) and the Worker's stand-in in
tests, so it answers exactly as the protocol says: the signature and timestamp window
first, then size, encoding and shape, then each event on its own (a bad event is listed
with its field and rule, the good ones are written). A batch id it has already accepted is
answered ``duplicate: true`` and not written again; event ids are unique in the store, so
even a replay the collector has forgotten (after a restart) stores nothing twice. Accepted
batches are fsynced to a journal before the answer and moved into the store in large
inserts (see docs/delivery.md).

More routes (e.g. ``POST /v1/collect`` for browsers) plug in through ``extra_routes``.

>>> import tempfile, os
>>> from starlette.testclient import TestClient
>>> from edgemetrics.store import EmbeddedStore
>>> from edgemetrics.signing import sign
>>> store = EmbeddedStore(os.path.join(tempfile.mkdtemp(), "em.duckdb"))
>>> app = create_collector_app(store, secret="s3cret")
>>> body = b'{"batch_id": "' + b"b" * 32 + b'", "events": [{"type": "view", "content_id": "v1"}]}'
>>> with TestClient(app) as http:
...     answer = http.post("/v1/batch", content=body, headers=sign(body, "s3cret"))
>>> answer.status_code, answer.json()["accepted"]
(200, 1)
>>> store.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from edgemetrics.batch import new_batch_id
from edgemetrics.columnar import Columns, encode_batch
from edgemetrics.events import EVENT_TYPES, InvalidEvent, parse_event
from edgemetrics.layout import MAX_POINTS_PER_INVOCATION, DataPoint, LayoutLimitError, encode
from edgemetrics.privacy import drop_opted_out_columns
from edgemetrics.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureError, verify
from edgemetrics.spool import Spool, SpoolError
from edgemetrics.store import columns_to_arrow
from edgemetrics.wire import (
    MAX_DECOMPRESSED_BYTES,
    MAX_EVENTS_PER_BODY,
    MAX_SENT_BYTES,
    BodyTooLarge,
    gunzip_body,
)

if TYPE_CHECKING:
    from edgemetrics.privacy import PrivacyStore
    from edgemetrics.store import EmbeddedStore

log = logging.getLogger("edgemetrics")
_BATCH_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class CollectorSettings:
    """The collector's knobs; the defaults are the protocol's limits."""

    secret: str | bytes
    window_s: float = 300.0
    max_body_bytes: int = MAX_SENT_BYTES
    max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES
    max_events: int = MAX_EVENTS_PER_BODY
    # More concurrent batches than this are shed with 429 + Retry-After.
    max_concurrent: int = 32
    retry_after_s: int = 1
    # How many accepted batch ids are remembered for duplicate detection.
    remembered_batches: int = 200_000
    # Where accepted batches wait for the store (default: beside it, ``<store>.journal``).
    journal_dir: Path | None = None
    # The privacy key store shared with the senders: opted-out users' events are dropped.
    privacy: PrivacyStore | None = None


@dataclass
class IngestResult:
    """The data points of the valid events and the rejection of each invalid one."""

    points: list[DataPoint]
    rejected: list[dict[str, Any]]


def _rejection(index: int, raw: Any, errors: Sequence[tuple[str, str, str]]) -> dict[str, Any]:
    event_id = raw.get("event_id") if isinstance(raw, Mapping) else None
    return {
        "index": index,
        "event_id": event_id if isinstance(event_id, str) else None,
        "errors": [{"field": f, "rule": r, "message": m} for f, r, m in errors],
    }


def ingest_events(raw_events: Sequence[Any]) -> IngestResult:
    """Validate and encode each event; one bad event never loses the others.

    >>> result = ingest_events([{"type": "view", "content_id": "v1"}, {"type": "nope"}])
    >>> len(result.points), result.rejected[0]["errors"][0]["field"]
    (1, 'type')
    """
    points: list[DataPoint] = []
    rejected: list[dict[str, Any]] = []
    for index, raw in enumerate(raw_events):
        try:
            event = parse_event(raw)
            points.append(encode(event))
        except InvalidEvent as exc:
            rejected.append(_rejection(index, raw, exc.errors))
        except LayoutLimitError as exc:
            rejected.append(_rejection(index, raw, [("event", "blob_bytes", str(exc))]))
    return IngestResult(points, rejected)


def _merge(
    tables_list: Sequence[Mapping[str, Mapping[str, list[Any]]]],
) -> dict[str, dict[str, list[Any]]]:
    merged: dict[str, dict[str, list[Any]]] = {}
    for tables in tables_list:
        for dataset, table in tables.items():
            target = merged.get(dataset)
            if target is None:
                merged[dataset] = {name: list(values) for name, values in table.items()}
            else:
                for name, values in table.items():
                    target[name].extend(values)
    return merged


def _to_ipc(tables: Mapping[str, dict[str, list[Any]]]) -> bytes:
    """One Arrow IPC stream for a group of batches, with each row's dataset beside it."""
    parts = []
    for dataset, columns in tables.items():
        table = columns_to_arrow(columns)
        parts.append(table.append_column("dataset", pa.repeat(dataset, table.num_rows)))
    combined = pa.concat_tables(parts)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, combined.schema) as writer:
        writer.write_table(combined)
    return bytes(sink.getvalue().to_pybytes())


def _from_ipc(bodies: Sequence[bytes]) -> dict[str, pa.Table]:
    """The journal rows' tables, concatenated and split by dataset (dataset column dropped)."""
    combined = pa.concat_tables([pa.ipc.open_stream(body).read_all() for body in bodies])
    datasets = combined.column("dataset")
    out = {}
    for dataset in pc.unique(datasets).to_pylist():
        rows = combined.filter(pc.equal(datasets, dataset))
        out[str(dataset)] = rows.drop_columns(["dataset"])
    return out


class _Journal:
    """Accepted batches on disk before the answer; moved into the store in large inserts.

    A DuckDB insert of 250 rows costs several times more per row than one of 5,000, so
    the collector does not insert per request. The batches that arrive together are
    written as one journal row (SQLite, fsynced: one fsync per group) and answered;
    a mover thread then inserts whatever has gathered, thousands of rows at a time, and
    deletes those journal rows. After a crash the journal is moved on the next start;
    unique event ids make a second move harmless.
    """

    def __init__(self, store: EmbeddedStore, directory: Path, max_rows: int = 20_000) -> None:
        self.store = store
        self.max_rows = max_rows
        # Never bounded: every row here was answered 200 and must reach the store.
        self.spool = Spool(directory, max_bytes=1 << 62, max_age=float("inf"), lease_s=600)
        self._pending: list[tuple[Columns, Future[None]]] = []
        self._ready = threading.Condition()
        self._work = threading.Event()
        self._closed = False
        self.inserted = 0
        self.moved = 0
        self.inserts = 0
        self.journal_writes = 0
        # Rows left by a previous run count as journaled: pending = journaled - moved.
        self.journal_events = self.spool.stats().events
        self.min_insert_rows = 5_000
        self.linger_s = 0.1
        self._writer = threading.Thread(target=self._write_loop, name="edgemetrics-journal")
        self._mover = threading.Thread(target=self._move_loop, name="edgemetrics-store-mover")
        self._writer.start()
        self._mover.start()
        self._work.set()  # a journal left by a previous run is moved at once

    def submit(self, columns: Columns) -> Future[None]:
        """Resolved once the batch is durable in the journal."""
        future: Future[None] = Future()
        with self._ready:
            self._pending.append((columns, future))
            self._ready.notify()
        return future

    def pending_events(self) -> int:
        return self.spool.stats().events

    def close(self) -> None:
        """Journal what is queued, move everything into the store, stop."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._writer.join(30)
        self._work.set()
        self._mover.join(120)
        self.spool.close()

    def _write_loop(self) -> None:
        while True:
            with self._ready:
                while not self._pending and not self._closed:
                    self._ready.wait()
                if not self._pending and self._closed:
                    return
                taken, self._pending = self._pending, []
            merged = _merge([columns.tables for columns, _ in taken])
            count = sum(columns.count for columns, _ in taken)
            try:
                self.spool.put(
                    new_batch_id(), _to_ipc(merged), events=count, critical=True, durable=True
                )
            except Exception as exc:  # answered 503: the sender keeps the batch and retries
                for _, future in taken:
                    future.set_exception(exc)
                continue
            self.journal_writes += 1
            self.journal_events += count
            for _, future in taken:
                future.set_result(None)
            self._work.set()

    def _move_loop(self) -> None:
        while True:
            self._work.wait(0.5)
            self._work.clear()
            # Let a few thousand rows gather (at most linger_s): per row, an insert of
            # 5,000 costs about half of one of 1,000. Only the store's view lags; every
            # batch was answered once it was in the journal.
            waited = 0.0
            while (
                not self._closed
                and waited < self.linger_s
                and self.journal_events - self.moved < self.min_insert_rows
            ):
                time.sleep(0.01)
                waited += 0.01
            while True:
                try:
                    rows = self.spool.claim(64)
                except SpoolError as exc:
                    log.error("edgemetrics collector: cannot read the journal: %s", exc)
                    break
                if not rows:
                    break
                try:
                    inserted = 0
                    for dataset, table in _from_ipc([row.body for row in rows]).items():
                        for start in range(0, table.num_rows, self.max_rows):
                            chunk = table.slice(start, self.max_rows)
                            inserted += self.store.write_arrow(dataset, chunk)
                            self.inserts += 1
                    self.spool.ack([row.batch_id for row in rows])
                except Exception:  # keep the journal rows; try again shortly
                    log.exception("edgemetrics collector: moving the journal into the store failed")
                    self.spool.release([row.batch_id for row in rows])
                    time.sleep(0.5)
                    break
                self.inserted += inserted
                self.moved += sum(row.events for row in rows)
            if self._closed and not self._writer.is_alive():
                try:
                    if not self.spool.ready():
                        return
                except SpoolError:
                    return


class _SeenBatches:
    """Accepted batch ids, oldest forgotten first (bounded memory)."""

    def __init__(self, size: int) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def __contains__(self, batch_id: str) -> bool:
        with self._lock:
            return batch_id in self._ids

    def add(self, batch_id: str) -> None:
        with self._lock:
            self._ids[batch_id] = None
            while len(self._ids) > self._size:
                self._ids.popitem(last=False)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps({"error": {"code": code, "message": message}}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


class BatchEndpoint:
    """``POST /v1/batch``: signed server batches into the store."""

    def __init__(self, store: EmbeddedStore, settings: CollectorSettings) -> None:
        self.store = store
        self.settings = settings
        journal_dir = settings.journal_dir or Path(str(store.path) + ".journal")
        self.journal = _Journal(store, Path(journal_dir))
        self.seen = _SeenBatches(settings.remembered_batches)
        self.in_flight = 0
        self._stats_lock = threading.Lock()
        # "accepted" counts events answered as written; "inserted" those new to the store
        # (the difference is events delivered twice, e.g. after a sender crashed mid-send).
        self.stats: dict[str, float] = {
            "batches": 0,
            "accepted": 0,
            "inserted": 0,
            "rejected": 0,
            "duplicates": 0,
            "shed": 0,
            # Where a batch's time goes: validation/encoding, and waiting for the store.
            "encode_ms": 0.0,
            "store_wait_ms": 0.0,
            "journal_writes": 0,
            "opted_out": 0,
        }

    async def __call__(self, request: Request) -> Response:
        settings = self.settings
        if self.in_flight >= settings.max_concurrent:
            self.stats["shed"] += 1
            return _error(
                429,
                "overloaded",
                f"more than {settings.max_concurrent} batches in progress; retry later",
                {"Retry-After": str(settings.retry_after_s)},
            )
        self.in_flight += 1
        try:
            return await self._handle(request)
        finally:
            self.in_flight -= 1

    async def _read(self, request: Request) -> bytes | Response:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return _error(413, "too_large", f"body: {declared} bytes sent, the limit is {limit}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return _error(413, "too_large", f"body: over {limit} bytes sent")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _handle(self, request: Request) -> Response:
        settings = self.settings
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", ""):
            return _error(
                415,
                "unsupported_encoding",
                f"Content-Encoding {encoding!r} is not supported; send identity or gzip",
            )
        body = await self._read(request)
        if isinstance(body, Response):
            return body
        try:
            verify(
                body,
                request.headers.get(TIMESTAMP_HEADER),
                request.headers.get(SIGNATURE_HEADER),
                settings.secret,
                window=settings.window_s,
            )
        except SignatureError as exc:
            return _error(401, exc.code, exc.message)
        if encoding == "gzip":
            try:
                body = gunzip_body(body, settings.max_decompressed_bytes)
            except BodyTooLarge:
                return _error(
                    413,
                    "too_large",
                    f"body: inflates past {settings.max_decompressed_bytes} bytes",
                )
            except zlib.error as exc:
                return _error(400, "malformed_json", f"body: not a valid gzip stream ({exc})")
        elif len(body) > settings.max_decompressed_bytes:
            return _error(413, "too_large", "body: over the decompressed size limit")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _error(400, "malformed_json", f"body: not valid JSON ({exc})")
        shape_error = _shape_error(data)
        if shape_error:
            return _error(400, "bad_shape", shape_error)
        batch_id: str = data["batch_id"]
        raw_events: list[Any] = data["events"]
        if len(raw_events) > settings.max_events:
            return _error(
                413,
                "too_many_events",
                f"events: {len(raw_events)} in one batch, the limit is {settings.max_events}",
            )
        status = 202 if len(raw_events) > MAX_POINTS_PER_INVOCATION else 200
        if batch_id in self.seen:
            self.stats["duplicates"] += 1
            return _answer(status, batch_id, 0, [], duplicate=True)
        started = time.perf_counter()
        columns, rejected = await run_in_threadpool(encode_batch, raw_events)
        opted_out = 0
        if self.settings.privacy is not None and columns.count:
            # Answered as accepted (the sender must not retry them), never stored.
            opted_out = drop_opted_out_columns(columns, self.settings.privacy)
        encoded = time.perf_counter()
        if columns.count:
            try:
                await asyncio.wrap_future(self.journal.submit(columns))
            except Exception as exc:
                return _error(
                    503, "store_unavailable", f"the store could not write the batch: {exc}"
                )
        self.seen.add(batch_id)
        with self._stats_lock:
            self.stats["batches"] += 1
            self.stats["accepted"] += columns.count + opted_out
            self.stats["rejected"] += len(rejected)
            self.stats["opted_out"] += opted_out
            self.stats["inserted"] = self.journal.inserted
            self.stats["encode_ms"] += (encoded - started) * 1000.0
            self.stats["store_wait_ms"] += (time.perf_counter() - encoded) * 1000.0
            self.stats["journal_writes"] = self.journal.journal_writes
        return _answer(status, batch_id, columns.count + opted_out, rejected, duplicate=False)


def _shape_error(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "body: must be a JSON object with batch_id and events"
    unknown = sorted(set(data) - {"batch_id", "events"})
    if unknown:
        return f"body: unknown keys {unknown}; expected batch_id and events"
    batch_id = data.get("batch_id")
    if not isinstance(batch_id, str) or not _BATCH_ID.match(batch_id):
        return "batch_id: must be 32 lowercase hex digits"
    if not isinstance(data.get("events"), list):
        return "events: must be a JSON array of event objects"
    return None


def _answer(
    status: int, batch_id: str, accepted: int, rejected: list[dict[str, Any]], *, duplicate: bool
) -> Response:
    payload = {
        "batch_id": batch_id,
        "accepted": accepted,
        "rejected": rejected,
        "duplicate": duplicate,
    }
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def openapi_document(extra_paths: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the collector (served at ``/openapi.json``).

    >>> doc = openapi_document()
    >>> sorted(doc["paths"]["/v1/batch"]["post"]["responses"])[:3]
    ['200', '202', '400']
    """
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    }
    answer = {
        "type": "object",
        "required": ["batch_id", "accepted", "rejected", "duplicate"],
        "properties": {
            "batch_id": {"type": "string"},
            "accepted": {"type": "integer"},
            "duplicate": {"type": "boolean"},
            "rejected": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "event_id": {"type": ["string", "null"]},
                        "errors": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "field": {"type": "string"},
                                    "rule": {"type": "string"},
                                    "message": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
    }
    event_refs = [{"$ref": f"#/components/schemas/{name}"} for name in sorted(EVENT_TYPES)]
    schemas: dict[str, Any] = {
        name: model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, model in EVENT_TYPES.items()
    }
    for schema in list(schemas.values()):
        schemas.update(schema.pop("$defs", {}))
    schemas["Error"] = error
    schemas["BatchAnswer"] = answer
    json_error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    json_answer = {"application/json": {"schema": {"$ref": "#/components/schemas/BatchAnswer"}}}
    signed = [
        {
            "name": TIMESTAMP_HEADER,
            "in": "header",
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
            "description": "Unix seconds when the request was signed; within 300 s of now.",
        },
        {
            "name": SIGNATURE_HEADER,
            "in": "header",
            "required": True,
            "schema": {"type": "string", "pattern": "^v1=[0-9a-f]{64}$"},
            "description": 'v1= + hex HMAC-SHA256 over timestamp + "." + body (as sent).',
        },
    ]
    paths: dict[str, Any] = {
        "/v1/batch": {
            "post": {
                "summary": "Ingest a signed server batch",
                "parameters": signed,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["batch_id", "events"],
                                "additionalProperties": False,
                                "properties": {
                                    "batch_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                                    "events": {
                                        "type": "array",
                                        "maxItems": MAX_EVENTS_PER_BODY,
                                        "items": {
                                            "oneOf": event_refs,
                                            "discriminator": {"propertyName": "type"},
                                        },
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "Written (or a duplicate batch id)",
                        "content": json_answer,
                    },
                    "202": {"description": "Over 250 events: accepted", "content": json_answer},
                    "400": {"description": "malformed_json, bad_shape", "content": json_error},
                    "401": {
                        "description": "missing_signature, bad_signature, stale_timestamp",
                        "content": json_error,
                    },
                    "413": {"description": "too_large, too_many_events", "content": json_error},
                    "415": {"description": "unsupported_encoding", "content": json_error},
                    "429": {"description": "Shedding load; see Retry-After", "content": json_error},
                },
            }
        }
    }
    if extra_paths:
        paths.update(extra_paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": "edgemetrics ingest", "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def create_collector_app(
    store: EmbeddedStore,
    *,
    secret: str | bytes | None = None,
    settings: CollectorSettings | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    extra_openapi_paths: Mapping[str, Any] | None = None,
) -> Starlette:
    """The collector as a Starlette app; ``extra_routes`` adds more endpoints beside it."""
    if settings is None:
        if not secret:
            raise ValueError("secret: the collector needs the shared signing secret")
        settings = CollectorSettings(secret=secret)
    endpoint = BatchEndpoint(store, settings)
    document = orjson.dumps(openapi_document(extra_openapi_paths))

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    async def health(request: Request) -> Response:
        journal = endpoint.journal
        stats = {
            **endpoint.stats,
            "inserted": journal.inserted,
            "moved": journal.moved,
            "store_inserts": journal.inserts,
            "pending": await run_in_threadpool(journal.pending_events),
        }
        return Response(
            orjson.dumps({"ok": True, "time": time.time(), **stats}),
            media_type="application/json",
        )

    routes: list[BaseRoute] = [
        Route("/v1/batch", endpoint.__call__, methods=["POST"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
        *extra_routes,
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        endpoint.journal.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.batch_endpoint = endpoint
    app.state.store = store
    app.state.settings = settings
    return app
