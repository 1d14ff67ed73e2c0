"""Shared answers: many viewers, one query; stale answers served while one refresh runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from edgemetrics.dashboard_kit.answers import SharedAnswers

from edgemetrics.events import View
from edgemetrics.layout import encode
from edgemetrics.query import EmbeddedBackend, Engine, Principal, Query, TimeRange
from edgemetrics.store import EmbeddedStore

VIEWS = Query(("views",), time_range=TimeRange.preset("today"))


def views(n: int, creator: str = "c1") -> list:  # type: ignore[type-arg]
    return [encode(View(content_id="v1", creator_id=creator)) for _ in range(n)]


def test_fifty_viewers_at_once_cost_one_query(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "em.duckdb")
    store.write(views(500))
    answers = SharedAnswers(Engine(EmbeddedBackend(store), cache_ttl=0), ttl=30)
    start = threading.Barrier(50)
    seen: list[float | None] = []

    def viewer() -> None:
        start.wait()
        seen.append(answers.run(VIEWS, Principal.owner()).value("views"))

    threads = [threading.Thread(target=viewer) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [500.0] * 50
    assert answers.computed == 1
    # Another scope never gets the owner's answer.
    assert answers.run(VIEWS, Principal.creator("c2")).value("views") == 0.0
    assert answers.computed == 2
    store.close()


def test_an_expired_answer_is_served_while_one_refresh_runs(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "em.duckdb")
    store.write(views(3))
    now = [1000.0]
    answers = SharedAnswers(
        Engine(EmbeddedBackend(store), cache_ttl=0), ttl=30, max_stale=60, clock=lambda: now[0]
    )
    owner = Principal.owner()
    assert answers.run(VIEWS, owner).value("views") == 3.0
    store.write(views(2))
    now[0] += 10  # fresh: the new views are not seen yet
    assert answers.run(VIEWS, owner).value("views") == 3.0
    now[0] += 25  # expired, not yet past max_stale: served now, refreshed behind the scenes
    assert answers.run(VIEWS, owner).value("views") == 3.0
    deadline = time.monotonic() + 10
    while answers.computed < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert answers.run(VIEWS, owner).value("views") == 5.0
    store.write(views(4))
    now[0] += 100  # long gone: the answer is computed while the viewer waits
    assert answers.run(VIEWS, owner).value("views") == 9.0
    store.close()
