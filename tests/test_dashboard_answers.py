"""Shared answers: many viewers, one query; stale answers served while one refresh runs."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from edgemetrics.dashboard_kit import answers as answers_module
from edgemetrics.dashboard_kit.answers import SharedAnswers

from edgemetrics.events import View
from edgemetrics.layout import encode
from edgemetrics.query import EmbeddedBackend, Engine, Filter, Principal, Query, TimeRange
from edgemetrics.store import EmbeddedStore

VIEWS = Query(("views",), time_range=TimeRange.preset("today"))


def views(n: int, creator: str = "c1") -> list:  # type: ignore[type-arg]
    return [encode(View(content_id="v1", creator_id=creator)) for _ in range(n)]


def clocked_answers(store: EmbeddedStore) -> tuple[SharedAnswers, list[float]]:
    """Shared answers over ``store`` on a clock the test moves (``now[0] += seconds``)."""
    now = [1000.0]
    answers = SharedAnswers(
        Engine(EmbeddedBackend(store), cache_ttl=0), ttl=30, max_stale=60, clock=lambda: now[0]
    )
    return answers, now


def wait_computed(answers: SharedAnswers, n: int) -> None:
    """Wait (up to 10 s) for the refreshes running behind the scenes to reach ``n``."""
    deadline = time.monotonic() + 10
    while answers.computed < n and time.monotonic() < deadline:
        time.sleep(0.01)


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
    answers, now = clocked_answers(store)
    owner = Principal.owner()
    assert answers.run(VIEWS, owner).value("views") == 3.0
    store.write(views(2))
    now[0] += 10  # fresh: the new views are not seen yet
    assert answers.run(VIEWS, owner).value("views") == 3.0
    now[0] += 25  # expired, not yet past max_stale: served now, refreshed behind the scenes
    assert answers.run(VIEWS, owner).value("views") == 3.0
    wait_computed(answers, 2)
    assert answers.run(VIEWS, owner).value("views") == 5.0
    store.write(views(4))
    now[0] += 100  # long gone: the answer is computed while the viewer waits
    assert answers.run(VIEWS, owner).value("views") == 9.0
    store.close()


def test_an_expired_answer_on_unchanged_rows_is_kept_not_computed_again(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "em.duckdb")
    store.write(views(3))
    answers, now = clocked_answers(store)
    owner = Principal.owner()
    assert answers.run(VIEWS, owner).value("views") == 3.0
    now[0] += 35  # expired; the table holds the rows it was computed on
    assert answers.run(VIEWS, owner).value("views") == 3.0
    time.sleep(0.2)
    assert answers.computed == 1
    now[0] += 35  # and again: revalidated, not recomputed
    assert answers.run(VIEWS, owner).value("views") == 3.0
    assert answers.computed == 1
    store.write(views(2))
    now[0] += 35  # new rows: served once more while the refresh runs, then the new answer
    assert answers.run(VIEWS, owner).value("views") == 3.0
    wait_computed(answers, 2)
    assert answers.run(VIEWS, owner).value("views") == 5.0
    # A deletion changes the rows too (the same count after one more write and a delete).
    store.write(views(1))
    now[0] += 35
    answers.run(VIEWS, owner)
    wait_computed(answers, 3)
    assert answers.run(VIEWS, owner).value("views") == 6.0
    store.execute(
        "DELETE FROM edgemetrics_content WHERE rowid = (SELECT min(rowid) FROM edgemetrics_content)"
    )
    store.write(views(1))
    now[0] += 35
    answers.run(VIEWS, owner)
    wait_computed(answers, 4)
    assert answers.computed == 4
    # A period moving with the clock is never kept this way.
    rolling = Query(("views",), time_range=TimeRange.last(timedelta(hours=1)))
    answers.run_keyed(rolling, owner, "last-hour")
    now[0] += 35
    answers.run_keyed(rolling, owner, "last-hour")
    wait_computed(answers, 6)
    assert answers.computed == 6
    store.close()


# --- many creators, one statement ----------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _generated(tmp_path: Path, n: int = 30_000) -> tuple[EmbeddedStore, list[str]]:
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from dashboard_events import generate

    store = EmbeddedStore(tmp_path / "em.duckdb")
    generate(store, n)
    creators = [
        r["c"]
        for r in store.query(
            "SELECT index1 AS c FROM edgemetrics_content GROUP BY 1 ORDER BY count(*) DESC, 1"
        )
    ]
    return store, creators


def _plain(value: object) -> object:
    """JSON-ish card data with floats rounded (two statements may add in another order)."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


CREATOR_VIEWS = [
    "",
    "period=7d",
    "period=7d&device=mobile",
    "country=US",
    "period=all&content_type=audio",
]


def _cards_for(engine: object, creator: str, params: str, now: datetime) -> dict[str, object]:
    from edgemetrics.dashboard_kit.cards import CARDS, Context
    from edgemetrics.dashboard_kit.filters import ViewFilters
    from starlette.datastructures import QueryParams

    out = {}
    for card in CARDS.values():
        if card.section in ("health", "item"):
            continue
        ctx = Context(
            engine,  # type: ignore[arg-type]
            Principal.creator(creator),
            ViewFilters.from_params(QueryParams(params)),
            lambda ids: {},
            now=now,
        )
        out[card.id] = _plain(card.build(ctx).to_json())
    return out


@pytest.mark.parametrize("small", [False, True], ids=["one-statement", "in-runs"])
def test_creators_asked_together_each_get_the_answer_they_get_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small: bool
) -> None:
    if small:
        # More creators than a filter holds, answers longer than a statement returns: the
        # creators are asked over every creator's rows, then in runs, then halves, alone.
        monkeypatch.setattr(answers_module, "MAX_FILTER_VALUES", 4)
        monkeypatch.setattr(answers_module, "MAX_LIMIT", 40)
        monkeypatch.setattr(answers_module, "PLANNED_ROWS", 36)
    store, creators = _generated(tmp_path)
    now = datetime.now(UTC).replace(microsecond=0)
    # A spread of creators (large, small, one without any rows in most views) and one unknown.
    chosen = creators[:6] + creators[-4:] + ["nobody"]
    alone = Engine(EmbeddedBackend(store), cache_ttl=0, clock=lambda: now)
    together = SharedAnswers(
        Engine(EmbeddedBackend(store), cache_ttl=0, clock=lambda: now), ttl=3600
    )
    together.warm(chosen)
    for params in CREATOR_VIEWS:
        for creator in chosen:
            assert _cards_for(together, creator, params, now) == _cards_for(
                alone, creator, params, now
            ), (creator, params)
    questions = len(together._answers)
    # One grouped statement per question, not one per creator and question.
    assert together.computed * (2 if small else 5) < questions
    store.close()


def test_answers_too_long_for_one_statement_are_asked_in_runs_before_one_comes_back_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small statements: a creator filter holds 4 values, a statement returns 40 rows.
    monkeypatch.setattr(answers_module, "MAX_FILTER_VALUES", 4)
    monkeypatch.setattr(answers_module, "MAX_LIMIT", 40)
    monkeypatch.setattr(answers_module, "PLANNED_ROWS", 36)
    store, creators = _generated(tmp_path)
    now = datetime.now(UTC).replace(microsecond=0)
    chosen = creators[:6] + creators[-4:]
    alone = Engine(EmbeddedBackend(store), cache_ttl=0, clock=lambda: now)
    engine = Engine(EmbeddedBackend(store), cache_ttl=0, clock=lambda: now)
    ran: list[tuple[Query, int]] = []
    real_run = engine.run

    def run(query: Query, principal: Principal) -> object:
        result = real_run(query, principal)
        ran.append((query, len(result.rows)))
        return result

    engine.run = run  # type: ignore[assignment,method-assign]
    together = SharedAnswers(engine, ttl=3600)
    together.warm(chosen)
    _cards_for(together, chosen[0], "", now)  # every creator's default view
    assert any(rows == 40 for _, rows in ran)  # the first time, some came back cut
    before = len(ran)
    # The same shapes of question under a filter: the runs are planned from the rows each
    # creator's answer took, so no statement over several creators comes back cut.
    for creator in chosen:
        assert _cards_for(together, creator, "country=US", now) == _cards_for(
            alone, creator, "country=US", now
        ), creator
    cut = [
        q
        for q, rows in ran[before:]
        if rows == 40
        and not any(f.dimension == "creator" and len(f.values) == 1 for f in q.filters)
    ]
    assert len(ran) > before and cut == []
    store.close()


def test_a_question_new_to_every_warm_creator_is_answered_for_all_of_them_at_once(
    tmp_path: Path,
) -> None:
    from edgemetrics.dashboard_kit.cards import CARDS, Context
    from edgemetrics.dashboard_kit.filters import ViewFilters

    store, creators = _generated(tmp_path)
    now = datetime.now(UTC).replace(microsecond=0)
    chosen = creators[:6] + creators[-4:]
    alone = Engine(EmbeddedBackend(store), cache_ttl=0, clock=lambda: now)
    engine = Engine(EmbeddedBackend(store), cache_ttl=0, clock=lambda: now)
    ran: list[Query] = []
    real_run = engine.run

    def run(query: Query, principal: Principal) -> object:
        ran.append(query)
        return real_run(query, principal)

    engine.run = run  # type: ignore[assignment,method-assign]
    together = SharedAnswers(engine, ttl=3600)
    together.warm(chosen)
    _cards_for(together, chosen[0], "", now)  # the warm-up: the rows per answer are seen
    together.warmed()

    def kpis(answers: object, creator: str) -> object:
        ctx = Context(
            answers,  # type: ignore[arg-type]
            Principal.creator(creator),
            ViewFilters.from_params({"country": "US"}),
            lambda ids: {},
            now=now,
        )
        return _plain(CARDS["kpi_views"].build(ctx).to_json())

    # One creator asks a view nobody asked: one statement over every creator's rows per
    # question, and every warm creator's answer kept.
    before = len(ran)
    assert kpis(together, chosen[4]) == kpis(alone, chosen[4])
    assert len(ran) - before == 2  # this period and the previous one
    assert all("creator" in q.dimensions and not q.filters[1:] for q in ran[before:])
    before = len(ran)
    for creator in chosen:
        assert kpis(together, creator) == kpis(alone, creator), creator
    assert len(ran) == before  # ready for each of them
    # Someone not warm is asked as before (alone), and gets their own answer.
    assert kpis(together, "nobody") == kpis(alone, "nobody")
    # Once the warm creators have answers, one asking again (its own answer gone) is
    # answered as before: alone, the others not asked again.
    fr = Query(("views",), filters=(Filter("country", "eq", "FR"),))
    mine = together.run(fr, Principal.creator(chosen[1])).value("views")
    assert mine == alone.run(fr, Principal.creator(chosen[1])).value("views")
    del together._answers[(f"creator:{chosen[2]}", fr.key())]
    before = len(ran)
    again = together.run(fr, Principal.creator(chosen[2])).value("views")
    assert again == alone.run(fr, Principal.creator(chosen[2])).value("views")
    assert len(ran) == before + 1 and "creator" not in ran[-1].dimensions
    store.close()


def test_a_row_indexed_to_another_creator_stops_the_grouped_statement(tmp_path: Path) -> None:
    store, creators = _generated(tmp_path, 5_000)
    a, b = creators[0], creators[1]
    # One view attributed to b but indexed to a: the engine shows it to neither.
    store.write([encode(View(content_id="stray", creator_id=b))])
    store.execute(f"UPDATE edgemetrics_content SET index1 = '{a}' WHERE blob2 = 'stray'")
    now = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
    alone = Engine(EmbeddedBackend(store), cache_ttl=0, clock=lambda: now)
    together = SharedAnswers(
        Engine(EmbeddedBackend(store), cache_ttl=0, clock=lambda: now), ttl=3600
    )
    chosen = creators[:5]
    together.warm(chosen)
    for creator in chosen:
        assert _cards_for(together, creator, "period=today", now) == _cards_for(
            alone, creator, "period=today", now
        )
    # Questions reading content rows were asked creator by creator; commerce rows are all
    # indexed to their creators, so those questions still took one statement each.
    from edgemetrics.query.compiler import plan

    reads_content = {}
    for scope, text in together._answers:
        query = together._answers[(scope, text)][1].query
        reads_content[(scope, text)] = "content" in plan(query, Principal.creator(a)).families
    content = sum(reads_content.values())
    commerce = len({text for (_, text), yes in reads_content.items() if not yes})
    assert content and commerce
    assert together.computed == content + commerce
    store.close()


# --- slots: viewers first, background never takes the last one ------------------------------


def test_viewers_go_before_background_work_and_boosted_work_goes_with_them() -> None:
    from edgemetrics.dashboard_kit.answers import Slots

    slots = Slots(2)
    assert slots.acquire(background=True, timeout=0)
    # Background work never takes the last slot: it is kept for a viewer.
    assert not slots.acquire(background=True, timeout=0)
    assert slots.acquire(background=False, timeout=0)
    order: list[str] = []
    boosted = [False]

    def wait(name: str, background: object) -> None:
        if slots.acquire(background=background, timeout=5):  # type: ignore[arg-type]
            order.append(name)
            slots.release()

    # Both slots busy: a background task, then a viewer, then a background task a viewer
    # now waits for (boosted) queue up.
    low = threading.Thread(target=wait, args=("background", True))
    low.start()
    time.sleep(0.05)
    viewer = threading.Thread(target=wait, args=("viewer", False))
    viewer.start()
    raised = threading.Thread(target=wait, args=("boosted", lambda: not boosted[0]))
    raised.start()
    time.sleep(0.05)
    boosted[0] = True
    slots.nudge()
    time.sleep(0.05)
    slots.release()  # one slot frees: a viewer's work goes first
    slots.release()
    for t in (low, viewer, raised):
        t.join(5)
    assert set(order[:2]) == {"viewer", "boosted"} and order[2] == "background"
