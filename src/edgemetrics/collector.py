"""The local collector: ``POST /v1/batch`` per docs/ingest-protocol.md, into the embedded store.

It is the embedded default's sink (``edgemetrics serve``) and the Worker's stand-in in
tests, so it answers exactly as the protocol says: the signature and timestamp window
first, then size, encoding and shape, then each event on its own (a bad event is listed
with its field and rule, the good ones are written). A batch id it has already accepted is
answered ``duplicate: true`` and not written again; the store leaves out events it already
holds, so even a replay the collector has forgotten (after a restart) stores nothing twice.
A body whose every event is valid is decoded and encoded by whole columns
(:func:`edgemetrics.columnar.decode_batch`); accepted batches are fsynced to a journal
before the answer and moved into the store a row group at a time (see docs/delivery.md).

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
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
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

from edgemetrics.columnar import (
    BATCH_ID,
    Columns,
    Rows,
    concat_rows,
    decode_batch,
    encode_batch,
)
from edgemetrics.events import EVENT_TYPES, InvalidEvent, parse_event
from edgemetrics.journal import Journal
from edgemetrics.layout import MAX_POINTS_PER_INVOCATION, DataPoint, LayoutLimitError, encode
from edgemetrics.privacy import drop_opted_out_columns
from edgemetrics.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureError, verify
from edgemetrics.spool import FILENAME as SPOOL_FILENAME
from edgemetrics.spool import Spool
from edgemetrics.wire import (
    MAX_DECOMPRESSED_BYTES,
    MAX_EVENTS_HEADER,
    MAX_EVENTS_PER_BODY,
    MAX_SENT_BYTES,
    BodyTooLarge,
    gunzip_body,
)

if TYPE_CHECKING:
    from edgemetrics.privacy import PrivacyStore
    from edgemetrics.store import EmbeddedStore

log = logging.getLogger("edgemetrics")


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


def _payload(columns: Columns) -> bytes:
    """A journal record: the batch's accepted rows, exactly as they will be inserted."""
    return orjson.dumps({d: rows.to_json() for d, rows in columns.tables.items()})


def _from_payload(payload: bytes) -> Columns:
    columns = Columns()
    for dataset, rows in orjson.loads(payload).items():
        columns.add(dataset, Rows.from_json(rows))
    return columns


def _legacy_journal_rows(body: bytes) -> Columns:
    """A journal row written by the collector before its journal became segment files
    (an Arrow IPC stream with a ``dataset`` column): read once, after an upgrade."""
    table = pa.ipc.open_stream(body).read_all()
    table = table.set_column(
        table.schema.get_field_index("timestamp"),
        "timestamp",
        table.column("timestamp").cast(pa.int64()),
    )
    columns = Columns()
    datasets = table.column("dataset")
    for dataset in pc.unique(datasets).to_pylist():
        rows = table.filter(pc.equal(datasets, dataset)).drop_columns(["dataset"])
        columns.add(str(dataset), Rows(rows.num_rows, rows.to_pydict()))
    return columns


_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


def _wake(waiters: Sequence[_Waiter], error: BaseException | None) -> None:
    """Resolve the waiting requests of one journal write: one wake-up per event loop, not
    one per request (each wake-up is a system call on the loop's self-pipe)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for loop, future in waiters:
        by_loop.setdefault(loop, []).append(future)
    for loop, futures in by_loop.items():
        # A closed loop raises RuntimeError: nobody waits for those answers any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, futures, error)


def _resolve(futures: Sequence[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():  # the request was cancelled (client gone)
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class _Intake:
    """Accepted batches: fsynced to the journal before the answer, then moved into the
    store in large inserts.

    DuckDB's cost per row falls steeply with the size of an insert, and an insert of a
    whole row group (122,880 rows) is written straight to the file, compressed, instead
    of through DuckDB's own WAL and a later checkpoint. So the collector does not insert
    per request. The batches that arrive together are written as journal records with
    one fsync (:class:`~edgemetrics.journal.Journal`) and answered; a mover thread keeps
    their rows in memory and inserts once a row group's worth has gathered, or when
    intake pauses (``idle_s``), or when the oldest has waited ``linger_s``; then the
    journal records are done. After a crash the journal is read back and moved on the
    next start; the store leaves out replayed events, so a second move stores nothing
    twice.

    ``linger_s`` is 5 s, the exporter's own default flush interval: an insert of fewer
    than about 100,000 rows goes through DuckDB's WAL and costs well over twice as much
    per row as a row group (about 6.3 against 2.4 us for the AE shape), so under steady
    traffic of 20,000 events/s or more every insert is a cheap one. Slower traffic has
    CPU to spare, and a pause in intake inserts at once.
    """

    def __init__(
        self,
        store: EmbeddedStore,
        directory: Path,
        *,
        min_insert_rows: int = 122_880,
        linger_s: float = 5.0,
        idle_s: float = 0.05,
        max_waiting_rows: int = 1_000_000,
    ) -> None:
        self.store = store
        self.directory = directory
        self.min_insert_rows = min_insert_rows
        self.linger_s = linger_s
        self.idle_s = idle_s
        # Past this many rows waiting for the store, answers wait too (back-pressure).
        self.max_waiting_rows = max_waiting_rows
        self.journal = Journal(directory)
        self._pending: list[tuple[bytes, Columns, _Waiter]] = []
        self._cond = threading.Condition()
        # (segment, columns) of journaled batches not yet handed to the mover.
        self._journaled: list[tuple[int, Columns]] = []
        self._waiting_rows = 0
        # The mover's rows in memory, waiting for an insert, and since when.
        self._gathered: list[tuple[int, Columns]] = []
        self._gathered_rows = 0
        self._oldest = 0.0
        self._last_arrival = 0.0
        self._closed = False
        self._writer_done = False
        self.inserted = 0
        self.moved = 0
        self.inserts = 0
        self.journal_writes = 0
        self.journal_events = 0
        self._writer = threading.Thread(target=self._write_loop, name="edgemetrics-journal")
        self._mover = threading.Thread(target=self._move_loop, name="edgemetrics-store-mover")
        self._writer.start()
        self._mover.start()

    def submit(self, columns: Columns) -> asyncio.Future[None]:
        """Resolved once the batch is durable in the journal (call it on the event loop)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        payload = _payload(columns)
        with self._cond:
            self._pending.append((payload, columns, (loop, future)))
            self._cond.notify_all()
        return future

    def pending_events(self) -> int:
        """Events answered but not yet in the store."""
        return self.journal_events - self.moved

    def close(self) -> None:
        """Journal what is queued, move everything into the store, stop."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._writer.join(30)
        self._mover.join(300)
        self.journal.close()

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (
                    not self._pending or self._waiting_rows > self.max_waiting_rows
                ):
                    self._cond.wait(0.5)
                if not self._pending:
                    self._writer_done = True
                    self._cond.notify_all()
                    return
                taken, self._pending = self._pending, []
            try:
                segment = self.journal.append([payload for payload, _, _ in taken])
            except Exception as exc:  # answered 503: the sender keeps the batch and retries
                log.error("edgemetrics collector: cannot write the journal: %s", exc)
                _wake([waiter for _, _, waiter in taken], exc)
                continue
            count = sum(columns.count for _, columns, _ in taken)
            with self._cond:
                self.journal_writes += 1
                self.journal_events += count
                self._waiting_rows += count
                self._last_arrival = time.monotonic()
                self._journaled.extend((segment, columns) for _, columns, _ in taken)
                self._cond.notify_all()
            _wake([waiter for _, _, waiter in taken], None)

    def _recover(self) -> None:
        """Move what an earlier run left in the journal (before anything newer)."""
        legacy = self.directory / SPOOL_FILENAME
        if legacy.exists():
            self._move_legacy()
        for segment, payload in self.journal.recover():
            columns = _from_payload(payload)
            with self._cond:
                self.journal_events += columns.count
                self._waiting_rows += columns.count
                self._journaled.append((segment, columns))
                full = self._waiting_rows >= self.min_insert_rows
            if full:  # a long journal is moved as it is read: memory stays bounded
                self._move_some(force=True)

    def _move_legacy(self) -> None:
        spool = Spool(self.directory, max_bytes=1 << 62, max_age=float("inf"), lease_s=600)
        try:
            while rows := spool.claim(16):
                for row in rows:
                    for dataset, table in _legacy_journal_rows(row.body).tables.items():
                        self.inserted += self.store.write_columns(
                            dataset, table.columns, table.count
                        )
                        self.inserts += 1
                spool.ack([row.batch_id for row in rows])
        finally:
            spool.close()
        for path in self.directory.glob(f"{SPOOL_FILENAME}*"):
            path.unlink(missing_ok=True)

    def _move_loop(self) -> None:
        try:
            self._recover()
        except Exception:
            log.exception("edgemetrics collector: reading the journal back failed")
        while True:
            with self._cond:
                while True:
                    self._take_journaled()
                    now = time.monotonic()
                    if self._gathered_rows >= self.min_insert_rows:
                        break
                    if self._gathered and (
                        self._writer_done
                        or now - self._last_arrival >= self.idle_s
                        or now - self._oldest >= self.linger_s
                    ):
                        break
                    if self._writer_done and not self._gathered:
                        return
                    self._cond.wait(self.idle_s / 2 if self._gathered else 0.5)
            if not self._move_some(force=False):
                time.sleep(0.5)  # the store refused: keep the rows, try again shortly

    def _take_journaled(self) -> None:
        if self._journaled:
            if not self._gathered:
                self._oldest = time.monotonic()
            for _, columns in self._journaled:
                self._gathered_rows += columns.count
            self._gathered.extend(self._journaled)
            self._journaled = []

    def _move_some(self, *, force: bool) -> bool:
        """Insert what has gathered; True when it is in the store."""
        if force:
            with self._cond:
                self._take_journaled()
        gathered, self._gathered = self._gathered, []
        by_dataset: dict[str, list[Rows]] = {}
        for _, columns in gathered:
            for dataset, rows in columns.tables.items():
                by_dataset.setdefault(dataset, []).append(rows)
        try:
            inserted = 0
            for dataset, parts in by_dataset.items():
                rows = concat_rows(parts)
                inserted += self.store.write_columns(dataset, rows.columns, rows.count)
                self.inserts += 1
        except Exception:
            log.exception("edgemetrics collector: moving the journal into the store failed")
            self._gathered = gathered + self._gathered
            return False
        moved = sum(columns.count for _, columns in gathered)
        done: dict[int, int] = {}
        for segment, _ in gathered:
            done[segment] = done.get(segment, 0) + 1
        for segment, records in done.items():
            self.journal.done(segment, records)
        with self._cond:
            self.inserted += inserted
            self.moved += moved
            self._waiting_rows -= moved
            self._gathered_rows -= moved
            self._cond.notify_all()
        return True


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
        self.journal = _Intake(store, Path(journal_dir))
        self.seen = _SeenBatches(settings.remembered_batches)
        self.in_flight = 0
        self._max_events_text = str(settings.max_events)
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
        started = time.perf_counter()
        # A body whose every event is valid (what the exporter sends) is decoded, checked
        # and encoded in one pass; any other body is answered event by event.
        fast = decode_batch(body, settings.max_events)
        if fast is not None:
            batch_id, fast_columns = fast
            events = fast_columns.count
        else:
            fast_columns = None
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                return _error(400, "malformed_json", f"body: not valid JSON ({exc})")
            shape_error = _shape_error(data)
            if shape_error:
                return _error(400, "bad_shape", shape_error)
            batch_id = data["batch_id"]
            raw_events: list[Any] = data["events"]
            events = len(raw_events)
            if events > settings.max_events:
                return _error(
                    413,
                    "too_many_events",
                    f"events: {events} in one batch, the limit is {settings.max_events}",
                )
        status = 202 if events > MAX_POINTS_PER_INVOCATION else 200
        if batch_id in self.seen:
            self.stats["duplicates"] += 1
            return self._answer(status, batch_id, 0, [], duplicate=True)
        if fast_columns is not None:
            columns, rejected = fast_columns, list[dict[str, Any]]()
        else:
            columns, rejected = await run_in_threadpool(encode_batch, raw_events)
        opted_out = 0
        if self.settings.privacy is not None and columns.count:
            # Answered as accepted (the sender must not retry them), never stored.
            opted_out = drop_opted_out_columns(columns, self.settings.privacy)
        encoded = time.perf_counter()
        if columns.count:
            try:
                await self.journal.submit(columns)
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
        return self._answer(status, batch_id, columns.count + opted_out, rejected, duplicate=False)

    def _answer(
        self,
        status: int,
        batch_id: str,
        accepted: int,
        rejected: list[dict[str, Any]],
        *,
        duplicate: bool,
    ) -> Response:
        payload = {
            "batch_id": batch_id,
            "accepted": accepted,
            "rejected": rejected,
            "duplicate": duplicate,
        }
        # The collector writes any batch at once (no AE limit of 250 here): saying how many
        # it takes lets the exporter send a backlog in fewer requests (Client.batch_size).
        return Response(
            orjson.dumps(payload),
            status_code=status,
            media_type="application/json",
            headers={MAX_EVENTS_HEADER: self._max_events_text},
        )


def _shape_error(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "body: must be a JSON object with batch_id and events"
    unknown = sorted(set(data) - {"batch_id", "events"})
    if unknown:
        return f"body: unknown keys {unknown}; expected batch_id and events"
    batch_id = data.get("batch_id")
    if not isinstance(batch_id, str) or not BATCH_ID.match(batch_id):
        return "batch_id: must be 32 lowercase hex digits"
    if not isinstance(data.get("events"), list):
        return "events: must be a JSON array of event objects"
    return None


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
    max_events_header = {
        MAX_EVENTS_HEADER: {
            "description": "The most events this receiver takes in one request.",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS_PER_BODY},
        }
    }
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
                        "headers": max_events_header,
                        "content": json_answer,
                    },
                    "202": {
                        "description": "Over 250 events: accepted",
                        "headers": max_events_header,
                        "content": json_answer,
                    },
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
            "pending": journal.pending_events(),
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
