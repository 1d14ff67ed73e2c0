"""Answers shared by everyone looking at once: one query per (scope, question), never a herd.

When many people open the dashboard together they ask the same questions. In front of the
engine this keeps, per (principal scope, query):

* **one run at a time**: callers asking what is already being computed wait for that run
  instead of starting their own (no thundering herd at start or when an answer expires);
* **no more runs at once than ``max_concurrent``** (default: the CPU count), so a burst
  of distinct questions queues instead of thrashing the backend;
* **fresh for ``ttl`` seconds**, then **stale while revalidating** up to ``max_stale``
  seconds old (default: five minutes): the old answer is served at once while one
  background thread computes the new one, so a viewer waits for the backend only when
  nobody asked that question lately. Under a load the backend cannot keep up with, the
  figures fall a little further behind instead of the pages slowing down.

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

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from edgemetrics.query import Principal, Query, Result

Key = tuple[str, str]


class Runs(Protocol):
    def run(self, query: Query, principal: Principal) -> Result: ...


class SharedAnswers:
    """Coalescing, stale-while-revalidate answers over an engine (see the module docstring)."""

    def __init__(
        self,
        engine: Runs,
        *,
        ttl: float = 30.0,
        max_entries: int = 50_000,
        max_stale: float = 300.0,
        max_concurrent: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.ttl = ttl
        self.max_stale = max(max_stale, ttl)
        self.max_entries = max_entries
        self.clock = clock
        self.computed = 0
        self._lock = threading.Lock()
        self._answers: OrderedDict[Key, tuple[float, Result]] = OrderedDict()
        self._running: dict[Key, Future[Result]] = {}
        self._refresher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="em-refresh")
        # No more backend queries at once than cores: more only thrash the embedded store.
        self._slots = threading.BoundedSemaphore(max_concurrent or os.cpu_count() or 2)

    def run(self, query: Query, principal: Principal) -> Result:
        """The answer to ``query`` for ``principal``: cached, shared or computed now."""
        if self.ttl <= 0:
            return self.engine.run(query, principal)
        key = (principal.scope, query.key())
        now = self.clock()
        with self._lock:
            held = self._answers.get(key)
            if held is not None:
                age = now - held[0]
                if age < self.ttl:
                    self._answers.move_to_end(key)
                    return held[1]
                if age < self.max_stale:
                    if key not in self._running:
                        self._running[key] = self._refresher.submit(
                            self._compute, key, query, principal
                        )
                    return held[1]
            running = self._running.get(key)
            if running is None:
                running = Future()
                self._running[key] = running
                owner = True
            else:
                owner = False
        if not owner:
            return running.result()
        try:
            result = self._compute(key, query, principal)
        except BaseException as exc:
            running.set_exception(exc)
            raise
        running.set_result(result)
        return result

    def _compute(self, key: Key, query: Query, principal: Principal) -> Result:
        try:
            with self._slots:
                result = self.engine.run(query, principal)
        except BaseException:
            with self._lock:
                self._running.pop(key, None)
            raise
        with self._lock:
            self.computed += 1
            self._answers[key] = (self.clock(), result)
            self._answers.move_to_end(key)
            while len(self._answers) > self.max_entries:
                self._answers.popitem(last=False)
            self._running.pop(key, None)
        return result
