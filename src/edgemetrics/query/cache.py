"""A small TTL cache of answers, keyed by (principal scope, backend, query).

Scopes never share entries: a creator's answer is never served to anyone else. Entries
expire ``ttl`` seconds after they were computed (default 30 s), so dashboards stay under a
minute behind while many people look at once.

>>> cache = ResultCache(ttl=30, clock=lambda: 100.0)
>>> cache.put(("owner", "q"), "answer")
>>> cache.get(("owner", "q")), cache.get(("creator:c1", "q"))
('answer', None)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class ResultCache:
    """Thread-safe, bounded (least recently used out first), expiring entries."""

    def __init__(
        self,
        ttl: float = 30.0,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 0:
            raise ValueError("cache_ttl: must be >= 0 seconds [range]")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or self._clock() - entry[0] >= self.ttl:
                if entry is not None:
                    del self._entries[key]
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: Hashable, value: Any) -> None:
        if self.ttl == 0:
            return
        with self._lock:
            self._entries[key] = (self._clock(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
