"""Answers shared by everyone looking at once: one query per question, never a herd.

When many people open the dashboard together they ask the same questions. In front of the
engine this keeps, per (principal scope, query):

* **one run at a time**: callers asking what is already being computed wait for that run
  instead of starting their own (no thundering herd at start or when an answer expires);
* **no more runs at once than ``max_concurrent``** (default: the CPU count), so a burst
  of distinct questions queues instead of thrashing the backend. Viewers waiting go before
  background work (refreshes, warming), and background work never takes every slot;
* **a queue that sheds load**: a viewer whose question waited ``queue_timeout`` seconds
  for a slot gets :class:`Overloaded` (the dashboard answers 503 with ``Retry-After``, and
  the page asks again) instead of a request that hangs until the browser gives up;
* **fresh for ``ttl`` seconds**, then **stale while revalidating** up to ``max_stale``
  seconds old (default: five minutes): the old answer is served at once while one
  background thread computes the new one, so a viewer waits for the backend only when
  nobody asked that question lately. Under a load the backend cannot keep up with, the
  figures fall a little further behind instead of the pages slowing down.
* **one statement for many creators**: creators ask the same questions of their own rows.
  On the embedded store, the same question from several creators (those waiting, and every
  creator who used the dashboard in the last ``active_s`` seconds and has no fresh answer)
  is answered by one owner statement grouped by creator, split into each creator's answer:
  the scan a creator's question costs is shared by all of them. Each split answer is the
  one the engine gives that creator (same rows, sums, intervals, order and limit); it is
  used only while every stored row of the families read is indexed to the creator it is
  attributed to, checked in the same snapshot of the store (else each creator is asked
  alone, and the engine's tenancy condition applies as always). How many rows a
  creator's answer takes is known from the answers to the same shape of question, so an
  answer too long for one statement is asked in runs of creators at once, not after a
  statement came back cut. A question none of the warm creators (see
  :meth:`SharedAnswers.warm`) has an answer to yet, whose answers for all of them fit in one
  statement, is asked over every creator's rows (the scan costs the same as for a few), and
  each warm creator's answer is kept: the next creators to ask it find it ready instead of
  starting one more statement each.

Scopes never share answers: a creator's answer is never served to anyone else.

>>> import os, tempfile
>>> from edgemetrics.store import EmbeddedStore
>>> from edgemetrics.query import EmbeddedBackend, Engine, Principal, Query
>>> store = EmbeddedStore(os.path.join(tempfile.mkdtemp(), "em.duckdb"))
>>> answers = SharedAnswers(Engine(EmbeddedBackend(store), cache_ttl=0), ttl=30)
>>> answers.run(Query(("views",)), Principal.owner()).value("views")
0.0
>>> answers.computed
1
>>> _ = answers.run(Query(("views",)), Principal.owner()); answers.computed
1
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from edgemetrics.query import BackendError, Filter, Principal, Query, Result
from edgemetrics.query.compiler import plan
from edgemetrics.query.model import MAX_FILTER_VALUES, MAX_LIMIT
from edgemetrics.query.result import Merger, ResultRow, _sort
from edgemetrics.query.semantic import CREATOR_FAMILIES, METRICS, TABLES, TENANT_COLUMN, col

log = logging.getLogger("edgemetrics.dashboard")

Key = tuple[str, str]
# (the period's resolved start, each table's (rows, last row id, newest timestamp in epoch
# ms), when it was taken (epoch s)): see SharedAnswers._version.
Version = tuple[Any, tuple[tuple[Any, ...], ...], float]
# Fewer creators than this asking one question: each is asked alone (a creator's own slice
# is cheaper than a statement grouped over several creators' rows).
BATCH_MIN = 3
# The rows a grouped statement is planned to return (a margin under MAX_LIMIT, whose
# reaching means a cut answer, asked again in runs of creators).
PLANNED_ROWS = 9_000
BUSY = "The analytics backend is busy; this card is asked again in a moment."


class Runs(Protocol):
    def run(self, query: Query, principal: Principal) -> Result: ...


class Overloaded(BackendError):
    """The question waited too long for the backend: ask again shortly."""


class Slots:
    """At most ``n`` backend queries at once. Waiting viewers go first; background work
    (refreshes, warming) takes at most ``n - 1`` slots, so one is always left for them,
    and while ``serving()`` says viewers are being answered it runs at most ``share`` of
    the time (after a background query of d seconds, the next waits d · (1 − share) /
    share): the backend's threads leave CPU to the pages being served.

    >>> slots = Slots(2)
    >>> slots.acquire(background=True, timeout=0), slots.acquire(background=True, timeout=0)
    (True, False)
    >>> slots.acquire(background=False, timeout=0)  # the slot left for viewers
    True
    """

    def __init__(
        self, n: int, *, share: float = 1.0, serving: Callable[[], bool] = lambda: False
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError("background_share: must be in (0, 1] [range]")
        self.share = share
        self.serving = serving
        self._low_ready = 0.0  # monotonic time before which background work waits
        self.n = max(1, n)
        self._cond = threading.Condition()
        self._busy = 0
        self._background = 0
        self._viewers_waiting = 0
        self._mine = threading.local()  # per thread: the kinds of the slots it holds

    def acquire(self, *, background: bool | Callable[[], bool], timeout: float | None) -> bool:
        """Take a slot; ``background`` may be a function, asked again while waiting (work
        a viewer started waiting for is no longer background). False after ``timeout``."""
        low = background if callable(background) else (lambda: bool(background))
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            counted = False
            try:
                while True:
                    is_low = low()
                    if not is_low and not counted:
                        self._viewers_waiting += 1
                        counted = True
                    pause = self._low_ready - time.monotonic() if is_low else 0.0
                    if pause <= 0 and self._free(is_low):
                        break
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    if pause > 0:
                        remaining = pause if remaining is None else min(pause, remaining)
                    self._cond.wait(remaining)
                self._busy += 1
                self._taken().append((is_low, time.monotonic()))
                if is_low:
                    self._background += 1
                return True
            finally:
                if counted:
                    self._viewers_waiting -= 1

    def _free(self, low: bool) -> bool:
        if self._busy >= self.n:
            return False
        if low:
            return self._viewers_waiting == 0 and self._background < max(1, self.n - 1)
        return True

    def release(self) -> None:
        with self._cond:
            self._busy -= 1
            low, since = self._taken().pop()
            if low:
                self._background -= 1
                if self.share < 1 and self.serving():
                    took = time.monotonic() - since
                    rest = took * (1 - self.share) / self.share
                    self._low_ready = max(self._low_ready, time.monotonic() + rest)
            self._cond.notify_all()

    def _taken(self) -> list[tuple[bool, float]]:
        taken: list[tuple[bool, float]] | None = getattr(self._mine, "taken", None)
        if taken is None:
            taken = self._mine.taken = []
        return taken

    def nudge(self) -> None:
        """Wake the waiting: one of them may have become a viewer's work."""
        with self._cond:
            self._cond.notify_all()

    @contextmanager
    def held(
        self, *, background: bool | Callable[[], bool], timeout: float | None
    ) -> Iterator[None]:
        if not self.acquire(background=background, timeout=timeout):
            raise Overloaded(BUSY)
        try:
            yield
        finally:
            self.release()


@dataclass
class _Work:
    """A run registered for some keys: background work a viewer now waits for is
    ``boosted`` to a viewer's priority (no viewer waits behind its own question)."""

    background: bool
    boosted: bool = False
    started: bool = False

    def low(self) -> bool:
        return self.background and not self.boosted


@dataclass
class _Batch(_Work):
    """Creators waiting for the answer to one question, not started yet."""

    query: Query | None = None
    name: str = ""  # the question's key in the shared answers
    waiting: dict[str, Future[Result]] = field(default_factory=dict)


class SharedAnswers:
    """Coalescing, stale-while-revalidate answers over an engine (see the module docstring)."""

    def __init__(
        self,
        engine: Runs,
        *,
        ttl: float = 30.0,
        max_entries: int = 100_000,
        max_stale: float = 300.0,
        max_concurrent: int | None = None,
        queue_timeout: float = 6.0,
        active_s: float = 900.0,
        batch_creators: bool = True,
        background_share: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 0:
            raise ValueError("cache_ttl: must be >= 0 seconds [range]")
        self.engine = engine
        self.ttl = ttl
        self.max_stale = max(max_stale, ttl)
        self.max_entries = max_entries
        self.queue_timeout = queue_timeout
        self.active_s = active_s
        self.clock = clock
        self.computed = 0  # backend runs (a statement for many creators counts once)
        self.shed = 0  # questions answered Overloaded
        self._lock = threading.Lock()
        # key -> (when computed or revalidated, answer, the data version it was computed on)
        self._answers: OrderedDict[Key, tuple[float, Result, Version | None]] = OrderedDict()
        self._versions: dict[str, tuple[float, tuple[Any, ...]]] = {}  # table -> (when, version)
        self._running: dict[Key, Future[Result]] = {}
        self._work: dict[Key, _Work] = {}
        self._until = threading.local()  # a viewer request's deadline (monotonic), if any
        self._pending: dict[tuple[str, bool], _Batch] = {}
        self._active: dict[str, float] = {}  # creator id -> last asked (clock)
        self._warming: set[str] = set()
        # The shape of a question (see _shape) -> the most rows one creator's answer took.
        self._widths: dict[str, int] = {}
        # The creators a statement over every creator's rows was seen to return (at least).
        self._tenants = 0
        # The creators given to warm(), most viewed first (see _idle).
        self._known: dict[str, None] = {}
        self._checked: dict[str, tuple[int, float, bool]] = {}  # family -> (rows, when, ok)
        self._refresher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="em-refresh")
        # Viewers' questions in the current and the last two-second window: many of them
        # is a busy serving path (a status poll or a lone viewer is not).
        self._asks = [0, 0]
        self._window = 0.0
        self.slots = Slots(
            max_concurrent or os.cpu_count() or 2, share=background_share, serving=self._serving
        )
        self._batching = batch_creators and _batchable_engine(engine)
        # Unchanged data: an expired answer computed on the same rows is the same answer.
        self._revalidating = _batchable_engine(engine) and getattr(engine, "rollups", None) is None

    # -- asking ------------------------------------------------------------------------------

    def run(self, query: Query, principal: Principal, *, background: bool = False) -> Result:
        """The answer to ``query`` for ``principal``: cached, shared or computed now.

        ``background``: asked by the dashboard itself (warming), not by a viewer waiting."""
        return self.run_keyed(query, principal, query.key(), background=background)

    def run_keyed(
        self, query: Query, principal: Principal, name: str, *, background: bool = False
    ) -> Result:
        """:meth:`run`, the answer kept under ``name`` instead of the query's own key: a
        question whose time range moves with the clock ("the previous 30 days") keeps one
        name, so its last answer is served while the moved range is computed."""
        if self.ttl <= 0:
            with self.slots.held(background=background, timeout=None):
                self.computed += 1
                return self.engine.run(query, principal)
        key = (principal.scope, name)
        now = self.clock()
        batch = self._batching and self._can_batch(query, principal)
        peek = self._answers.get(key)
        current = None
        if peek is not None and peek[2] is not None and self.ttl <= now - peek[0] < self.max_stale:
            current = self._version(query, name)
        with self._lock:
            if not background:
                self._count_ask(now)
            if principal.creator_id is not None and not background:
                self._active[principal.creator_id] = now
            held = self._answers.get(key)
            if held is not None:
                age = now - held[0]
                if age < self.ttl:
                    self._answers.move_to_end(key)
                    return held[1]
                if current is not None and held is peek and _unchanged(held[2], current):
                    # The rows it was computed on are the rows now: still the answer.
                    self._answers[key] = (now, held[1], held[2])
                    self._answers.move_to_end(key)
                    return held[1]
                if age < self.max_stale:
                    if key not in self._running:
                        self._start(key, query, principal, background=True, batch=batch)
                    return held[1]
            running = self._running.get(key)
            if running is None:
                running, lead = self._start(
                    key, query, principal, background=background, batch=batch, now=True
                )
            else:
                lead = None
                work = self._work.get(key)
                if not background and work is not None and work.low():
                    work.boosted = True
                    self.slots.nudge()
        if lead is not None:
            lead()
        try:
            return running.result(timeout=None if background else self._left())
        except TimeoutError:
            with self._lock:
                self.shed += 1
            raise Overloaded(BUSY) from None

    def warm(self, creators: Iterable[str]) -> None:
        """Answer ``creators`` too with every statement for a creator question, until
        :meth:`warmed` (what the dashboard does to precompute every creator's default view)."""
        with self._lock:
            self._warming.update(creators)
            self._known.update(dict.fromkeys(creators))

    def warmed(self) -> None:
        """Stop adding the creators given to :meth:`warm` (those who use the dashboard
        stay: they are active)."""
        with self._lock:
            self._warming.clear()

    # -- computing -----------------------------------------------------------------------------

    def _start(
        self,
        key: Key,
        query: Query,
        principal: Principal,
        *,
        background: bool,
        batch: bool,
        now: bool = False,
    ) -> tuple[Future[Result], Callable[[], None] | None]:
        """Register a run for ``key`` (the lock is held). Returns its future and, when the
        caller is to run it on its own thread (``now``), the function that does."""
        future: Future[Result] = Future()
        self._running[key] = future
        if batch:
            assert principal.creator_id is not None
            slot = (key[1], background)
            pending = self._pending.get(slot)
            if pending is not None:
                pending.waiting[principal.creator_id] = future
                self._work[key] = pending
                return future, None
            pending = self._pending[slot] = _Batch(background, query=query, name=key[1])
            pending.waiting[principal.creator_id] = future
            self._work[key] = pending

            def work() -> None:
                self._run_batch(pending)

        else:
            single = self._work[key] = _Work(background)

            def work() -> None:
                self._run_one(key, query, principal, future, single)

        if now and not background:
            return future, work
        self._refresher.submit(work)
        return future, None

    def _run_one(
        self, key: Key, query: Query, principal: Principal, future: Future[Result], work: _Work
    ) -> None:
        try:
            with self.slots.held(background=work.low, timeout=self._timeout(work.background)):
                version = self._version(query, key[1])
                result = self.engine.run(query, principal)
        except BaseException as exc:
            self._fail([key], [future], exc)
            return
        with self._lock:
            self.computed += 1
            self._keep(key, result, version)
            self._done(key)
        future.set_result(result)

    def _run_batch(self, batch: _Batch) -> None:
        """Answer every creator of ``batch`` (and the active creators lacking a fresh
        answer) once a slot is free: the creators joining while it waited come along."""
        qkey = batch.name
        if not self.slots.acquire(background=batch.low, timeout=self._timeout(batch)):
            with self._lock:
                if self._pending.get((qkey, batch.background)) is batch:
                    del self._pending[(qkey, batch.background)]
                waiting = dict(batch.waiting)
                batch.started = True
            exc = Overloaded(BUSY)
            self._fail([(f"creator:{c}", qkey) for c in waiting], list(waiting.values()), exc)
            return
        try:
            waiting = self._gather(batch, qkey)
            if not waiting:
                return
            try:
                assert batch.query is not None
                version = self._version(batch.query, qkey)
                extra = self._idle(qkey, waiting)
                answers = self._answer_creators(batch.query, sorted(waiting), extra)
            except BaseException as exc:
                self._fail([(f"creator:{c}", qkey) for c in waiting], list(waiting.values()), exc)
                return
            with self._lock:
                for creator, result in answers.items():
                    key = (f"creator:{creator}", qkey)
                    if creator in waiting:
                        self._keep(key, result, version)
                        self._done(key)
                    elif key not in self._answers and key not in self._running:
                        self._keep(key, result, version)  # a warm creator's, kept for later
            for creator, future in waiting.items():
                future.set_result(answers[creator])
        finally:
            self.slots.release()

    def _gather(self, batch: _Batch, qkey: str) -> dict[str, Future[Result]]:
        """The creators a starting batch answers: its own, those of a batch for the same
        question still waiting (absorbed), and active creators without a fresh answer."""
        with self._lock:
            if batch.started:  # absorbed by another batch, which answers its creators
                return {}
            batch.started = True
            for background in (False, True):
                other = self._pending.get((qkey, background))
                if other is None:
                    continue
                if other is batch or not other.started:
                    del self._pending[(qkey, background)]
                if other is not batch and not other.started:
                    for creator in other.waiting:
                        self._work[(f"creator:{creator}", qkey)] = batch
                    batch.boosted = batch.boosted or other.boosted or not other.background
                    batch.waiting.update(other.waiting)
                    other.waiting.clear()
                    other.started = True
            waiting = dict(batch.waiting)
            now = self.clock()
            for creator, seen in list(self._active.items()):
                if now - seen > self.active_s:
                    del self._active[creator]
            for creator in (*self._active, *self._warming):
                key = (f"creator:{creator}", qkey)
                if creator in waiting or key in self._running:
                    continue
                held = self._answers.get(key)
                if held is None or now - held[0] >= self.ttl / 2:
                    future: Future[Result] = Future()
                    self._running[key] = future
                    self._work[key] = batch
                    waiting[creator] = future
            return waiting

    def _idle(self, qkey: str, asking: dict[str, Future[Result]]) -> list[str]:
        """The warm creators with no answer to ``qkey`` and no run for it, when none of
        them has one (a question new to all of them), else none."""
        with self._lock:
            out = []
            for creator in self._known:
                if creator in asking:
                    continue
                key = (f"creator:{creator}", qkey)
                if key in self._answers or key in self._running:
                    return []
                out.append(creator)
            return out

    def _answer_creators(
        self, query: Query, creators: list[str], extra: list[str] | None = None
    ) -> dict[str, Result]:
        """Each creator's answer to ``query`` (and those of the ``extra`` creators that one
        statement over every creator's rows holds): one grouped statement when they are
        several and every row read is indexed to its creator, else one run each."""
        extra = extra or []
        whole = bool(extra) and self._whole(query, len(creators) + len(extra))
        if len(creators) >= BATCH_MIN or whole:
            split = self._grouped(query, creators, extra)
            if split is not None:
                return split
        out = {}
        for creator in creators:
            out[creator] = self.engine.run(query, Principal.creator(creator))
            with self._lock:
                self.computed += 1
        return out

    def _whole(self, query: Query, creators: int) -> bool:
        """Whether one statement over every creator's rows is known to hold the answers of
        ``creators`` creators to ``query``."""
        width = self._widths.get(_shape(query))
        return width is not None and max(creators, self._tenants) * width <= PLANNED_ROWS

    def _grouped(
        self, query: Query, creators: list[str], extra: list[str] | None = None
    ) -> dict[str, Result] | None:
        engine: Any = self.engine
        backend = engine.backend
        families = sorted(plan(query, Principal.creator(creators[0])).families)
        snapshot = getattr(backend, "snapshot", None)
        with snapshot() if snapshot is not None else nullcontext():
            if not all(self._attributed(backend, f) for f in families):
                return None
            out: dict[str, Result] = {}
            # Many creators: one statement over every creator's rows (a filter holds at
            # most MAX_FILTER_VALUES); if its answer is too long, runs of them in turn.
            # When the rows a creator's answer takes are known, an answer too long for one
            # statement is asked in runs at once (no statement run only to be cut).
            width = self._widths.get(_shape(query))
            everyone = len(creators) > MAX_FILTER_VALUES  # no filter: every creator's rows
            span = max(len(creators), self._tenants) if everyone else len(creators)
            chunks: list[list[str] | None]
            extra = extra or []
            also: list[str] = []
            if extra and self._whole(query, len(creators) + len(extra)):
                # Warm creators with no answer yet come along: the same scan, every row.
                chunks, also = [None], extra
            elif width is not None and span * width > PLANNED_ROWS:
                step = _per_statement(width)
                chunks = [creators[i : i + step] for i in range(0, len(creators), step)]
                chunks.reverse()  # popped from the end: the most viewed first
            else:
                chunks = [None if len(creators) > MAX_FILTER_VALUES else creators]
            while chunks:
                chunk = chunks.pop()
                filters = query.filters
                if chunk is not None:
                    filters += (Filter("creator", "in", tuple(chunk)),)
                owner_query = replace(
                    query,
                    dimensions=("creator", *query.dimensions),
                    filters=filters,
                    order_by=(),
                    limit=MAX_LIMIT,
                    offset=0,
                )
                result = engine.run(owner_query, Principal.owner())
                with self._lock:
                    self.computed += 1
                    if chunk is None:
                        seen = len({r.dimensions["creator"] for r in result.rows})
                        self._tenants = max(self._tenants, seen)
                if len(result.rows) < MAX_LIMIT:
                    split, widest = _split(query, result, chunk or creators + also)
                    out.update(split)
                    shape = _shape(query)
                    with self._lock:
                        self._widths[shape] = max(widest, self._widths.get(shape, 1))
                elif chunk is None:
                    step = MAX_FILTER_VALUES
                    chunks += [creators[i : i + step] for i in range(0, len(creators), step)]
                elif len(chunk) == 1:
                    out[chunk[0]] = engine.run(query, Principal.creator(chunk[0]))
                else:
                    half = len(chunk) // 2
                    chunks += [chunk[:half], chunk[half:]]
        return out

    def _version(self, query: Query, name: str) -> Version | None:
        """What ``query``'s answer depends on besides the clock, or None when that is not
        known: the resolved start of its preset period and, for each table it reads, the
        row count, the last row id and the newest timestamp (each read at most once a
        second). Taken before the answer is computed: a write during the run makes it
        differ. An answer is still valid while this stays the same and no stored row is
        newer than the moment it was computed (only rows written ahead of the clock could
        enter a period by the clock moving on). Ranges that move with the clock (kept
        under another name) and custom ranges are never revalidated this way."""
        if not self._revalidating or name != query.key() or query.time_range.name is None:
            return None
        try:
            families = sorted(plan(query, Principal.owner()).families)
            start = query.time_range.resolve().start
            tables = tuple(self._table_version(TABLES[f]) for f in families)
        except Exception:  # unknown: computed again as usual
            return None
        return (start, tables, time.time())

    def _table_version(self, table: str) -> tuple[Any, ...]:
        held = self._versions.get(table)
        now = self.clock()
        if held is not None and now - held[0] < 1.0:
            return held[1]
        engine: Any = self.engine
        row = engine.backend.run(
            f"SELECT count(*) AS n, max(rowid) AS last, epoch_ms(max(timestamp)) AS newest "
            f"FROM {table}"
        )[0]
        version = (int(row["n"]), row["last"], row["newest"])
        self._versions[table] = (now, version)
        return version

    def _attributed(self, backend: Any, family: str) -> bool:
        """Whether every stored row of ``family`` is indexed to the creator it is attributed
        to (read in the caller's snapshot). A check holds while the table keeps its row
        count, for at most a TTL."""
        table = TABLES[family]
        now = self.clock()
        rows = int(backend.run(f"SELECT count(*) AS n FROM {table}")[0]["n"])
        held = self._checked.get(family)
        if held is not None and held[0] == rows and now - held[1] < max(self.ttl, 1.0):
            return held[2]
        creator = col(family, "creator_id")
        found = backend.run(
            f"SELECT count(*) AS n FROM {table} WHERE {TENANT_COLUMN} IS DISTINCT FROM {creator}"
        )
        ok = int(found[0]["n"]) == 0
        if not ok:
            log.info("edgemetrics dashboard: %s has rows indexed to another creator", table)
        self._checked[family] = (rows, now, ok)
        return ok

    def _can_batch(self, query: Query, principal: Principal) -> bool:
        if principal.creator_id is None or "creator" in query.dimensions:
            return False
        if any(f.dimension == "creator" for f in query.filters):
            return False
        for name in query.metrics:
            metric = METRICS.get(name)
            if metric is None or metric.kind == "quantile":
                return False
            if not metric.families <= CREATOR_FAMILIES:
                return False
        # Rollups keep days whose raw rows are gone: no check covers them.
        return getattr(self.engine, "rollups", None) is None

    def _timeout(self, background: bool | _Batch) -> float | None:
        if isinstance(background, _Batch):
            background = background.background
        return None if background else self._left()

    @contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        """What a viewer's request on this thread may still wait, all its questions together
        (default: ``queue_timeout`` for each); past it, :class:`Overloaded`."""
        before = getattr(self._until, "at", None)
        self._until.at = time.monotonic() + seconds
        try:
            yield
        finally:
            self._until.at = before

    def _left(self) -> float:
        at: float | None = getattr(self._until, "at", None)
        if at is None:
            return self.queue_timeout
        return max(0.0, at - time.monotonic())

    def _count_ask(self, now: float) -> None:
        if now - self._window >= 2.0:
            self._asks = [1, self._asks[0] if now - self._window < 4.0 else 0]
            self._window = now
        else:
            self._asks[0] += 1

    def _serving(self) -> bool:
        """Whether viewers are being answered at a rate worth leaving CPU to (20 a second)."""
        if self.clock() - self._window >= 4.0:
            return False
        return max(self._asks) >= 40

    def _done(self, key: Key) -> None:
        self._running.pop(key, None)
        self._work.pop(key, None)

    def _keep(self, key: Key, result: Result, version: Version | None = None) -> None:
        self._answers[key] = (self.clock(), result, version)
        self._answers.move_to_end(key)
        while len(self._answers) > self.max_entries:
            self._answers.popitem(last=False)

    def _fail(self, keys: list[Key], futures: list[Future[Result]], exc: BaseException) -> None:
        if isinstance(exc, Overloaded):
            self.shed += len(futures)
        with self._lock:
            for key in keys:
                self._done(key)
        for future in futures:
            if not future.done():
                future.set_exception(exc)


def _unchanged(old: Version | None, new: Version) -> bool:
    """Whether an answer computed on ``old`` is still the answer on ``new``: the same period
    start and tables, and no row newer than the moment ``old`` was taken.

    >>> v = (0, ((5, 4, 1_000),), 2.0)
    >>> _unchanged(v, (0, ((5, 4, 1_000),), 9.0)), _unchanged(v, (0, ((6, 5, 1_000),), 9.0))
    (True, False)
    >>> _unchanged((0, ((5, 4, 3_000),), 2.0), (0, ((5, 4, 3_000),), 9.0))  # a row ahead
    False
    """
    if old is None or old[0] != new[0] or old[1] != new[1]:
        return False
    return all(newest is None or newest < old[2] * 1000 for _, _, newest in old[1])


def _batchable_engine(engine: Any) -> bool:
    """Only the embedded store's engine: its snapshot lets the attribution check and the
    grouped statement see the same rows."""
    backend = getattr(engine, "backend", None)
    return (
        getattr(backend, "dialect", None) == "duckdb"
        and getattr(backend, "snapshot", None) is not None
        and callable(getattr(engine, "run", None))
    )


def _shape(query: Query) -> str:
    """What the rows of a creator's answer to ``query`` depend on, filters and the clock
    aside: the metrics, dimensions, bucket and the period's name (a filter narrows the
    rows, it does not add any).

    >>> from edgemetrics.query import Filter
    >>> _shape(Query(("views",), bucket="day")) == _shape(
    ...     Query(("views",), bucket="day", filters=(Filter("country", "eq", "US"),)))
    True
    >>> _shape(Query(("views",), bucket="day")) == _shape(Query(("views",)))
    False
    """
    return repr((query.metrics, query.dimensions, query.bucket, query.tz, query.time_range.name))


def _per_statement(width: int) -> int:
    """How many creators one statement with a creator filter is asked for, when each
    creator's answer takes up to ``width`` rows.

    >>> _per_statement(1), _per_statement(40), _per_statement(20_000)
    (100, 100, 1)
    """
    return max(1, min(MAX_FILTER_VALUES, PLANNED_ROWS // max(1, width)))


def _split(query: Query, result: Result, creators: list[str]) -> tuple[dict[str, Result], int]:
    """Each creator's answer out of an owner answer grouped by creator: the rows the engine
    gives that creator (sorted and paged as it does, zeros for a creator with no rows), and
    the most rows one creator had in ``result``."""
    rows: dict[str, list[ResultRow]] = {c: [] for c in creators}
    for r in result.rows:
        creator = r.dimensions["creator"]
        if creator not in rows:
            continue
        dims = {k: v for k, v in r.dimensions.items() if k != "creator"}
        rows[creator].append(ResultRow(dims, r.metrics, r.ci, r.row_count, r.estimated))
    out = {}
    widest = max((len(mine) for mine in rows.values()), default=0)
    for creator, mine in rows.items():
        if query.output_dimensions:
            mine = _sort(mine, query)[query.offset : query.offset + query.limit]
        elif not mine:
            empty = Merger(plan(query, Principal.creator(creator)))
            mine = empty.result((), (), result.computed_at or _now()).rows
        out[creator] = Result(
            query=query,
            rows=mine,
            row_count=sum(r.row_count for r in mine),
            estimated=any(r.estimated for r in mine),
            sql=result.sql,
            sources=result.sources,
            computed_at=result.computed_at,
        )
    return out, widest


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
