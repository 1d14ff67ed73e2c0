"""The dashboard's JSON and download endpoints over loopback HTTP: scope, filters, estimates,
CSV and ZIP contents, and the answers people get when something is wrong."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from edgemetrics.dashboard_kit import create_dashboard
from loopback_server import serve_asgi
from starlette.requests import Request

from edgemetrics.events import ApiCall, Purchase, Refund, View
from edgemetrics.layout import encode
from edgemetrics.principal import Principal
from edgemetrics.store import EmbeddedStore


def who(request: Request) -> Principal | None:
    value = request.headers.get("x-who", "")
    if value == "owner":
        return Principal.owner()
    if value.startswith("creator:"):
        return Principal.creator(value[8:])
    return None


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = EmbeddedStore(tmp_path_factory.mktemp("api") / "em.duckdb")
    now = datetime.now(UTC) - timedelta(minutes=1)
    points = []
    # c-big's views were sampled at write time: each stored row stands for 10 views.
    for _ in range(40):
        points.append(
            encode(View(content_id="v-big", creator_id="c-big", country="FR", timestamp=now), 10)
        )
    for _ in range(5):
        points.append(encode(View(content_id="v-small", creator_id="c-small", timestamp=now)))
    points.append(
        encode(
            Purchase(
                content_id="v-small",
                creator_id="c-small",
                amount_minor=1250,
                currency="EUR",
                transaction_id="t1",
                timestamp=now,
            )
        )
    )
    points.append(
        encode(
            Refund(
                content_id="v-small",
                creator_id="c-small",
                amount_minor=250,
                currency="EUR",
                transaction_id="r1",
                timestamp=now,
            )
        )
    )
    points.append(
        encode(ApiCall(method="GET", route="/x", status_code=503, duration_ms=9, timestamp=now))
    )
    store.write(points)
    titles = {"v-big": "The big one", "v-small": "The small one"}
    app = create_dashboard(
        store, authenticate=who, titles=lambda ids: {i: titles[i] for i in ids if i in titles}
    )
    with serve_asgi(app) as url:
        yield url
    assert app.state.warmed.wait(60)  # no warm-up query left running on the store
    store.close()


def get(base: str, path: str, role: str = "owner") -> httpx.Response:
    return httpx.get(base + path, headers={"x-who": role} if role else {})


def test_sampled_answers_are_marked_as_estimates_with_intervals(base: str) -> None:
    card = get(base, "/api/card/kpi_views?period=today", "creator:c-big").json()
    assert card["estimated"] is True and card["row_count"] >= 40
    row = card["rows"][0]
    assert row["value"] == 400
    low, high = row["value_ci"]
    assert low < 400 < high
    text = get(base, "/export/kpi_views.csv?period=today", "creator:c-big").text
    assert "# values: estimated from sampled data" in text
    assert "Value 95% CI low" in text.splitlines()[4]
    # Exact data stays exact: the small creator's numbers carry no interval.
    small = get(base, "/api/card/kpi_views?period=today", "creator:c-small").json()
    assert small["estimated"] is False and small["rows"][0]["value_ci"] is None


def test_revenue_refunds_and_net(base: str) -> None:
    rows = get(base, "/api/card/revenue_net?period=today").json()["rows"]
    assert rows == [
        {"currency": "EUR", "revenue": 12.5, "refunds": 2.5, "refund_count": 1.0, "net": 10.0}
    ]


def test_a_creator_never_sees_another_creators_data(base: str) -> None:
    top = get(base, "/api/card/top_views?period=all", "creator:c-small").json()
    assert [r["title"] for r in top["rows"]] == ["The small one"]
    denied = get(base, "/api/card/item_kpis?item=v-big", "creator:c-small")
    assert denied.status_code == 403 and "another creator" in denied.json()["error"]
    page = get(base, "/content/v-big", "creator:c-small")
    assert page.status_code == 403 and "another creator" in page.text
    assert get(base, "/api/card/errors_by_endpoint", "creator:c-small").status_code == 403
    assert get(base, "/health", "creator:c-small").status_code == 403
    archive = zipfile.ZipFile(io.BytesIO(get(base, "/export/all.zip", "creator:c-small").content))
    names = archive.namelist()
    assert names and not any(n.startswith("health/") for n in names)
    for name in names:
        assert "The big one" not in archive.read(name).decode()
        assert "# scope: creator c-small" in archive.read(name).decode()


def test_the_owner_zip_holds_every_card_of_every_section(base: str) -> None:
    archive = zipfile.ZipFile(io.BytesIO(get(base, "/export/all.zip?period=7d").content))
    names = set(archive.namelist())
    assert {
        "overview/kpi_views.csv",
        "content/content_table.csv",
        "revenue/revenue_net.csv",
        "audience/top_countries.csv",
        "health/errors_by_endpoint.csv",
    } <= names
    health = archive.read("health/errors_by_endpoint.csv").decode()
    rows = list(csv.reader(line for line in health.splitlines() if not line.startswith("#")))
    assert rows[0][:4] == ["Endpoint", "Requests", "5xx answers", "Error rate (%)"]
    assert rows[1][:4] == ["app GET /x", "1", "1", "100.0"]
    assert "# filters: period: last 7 days" in health


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("period=fortnight", "period"),
        ("period=custom&from=2024-05-01", "to"),
        ("period=custom&from=2024-05-09&to=2024-05-01", "to"),
        ("country=France", "country"),
        ("device=fridge", "device"),
        ("authenticated=maybe", "authenticated"),
    ],
)
def test_bad_filters_get_an_error_naming_the_parameter(base: str, query: str, field: str) -> None:
    answer = get(base, f"/api/card/kpi_views?{query}")
    assert answer.status_code == 400
    assert answer.json()["error"].startswith(f"{field}:")


def test_unknown_things_and_strangers(base: str) -> None:
    assert get(base, "/api/card/nope").status_code == 404
    assert get(base, "/nope").status_code == 404
    stranger = get(base, "/", role="")
    assert stranger.status_code == 403 and "not allowed" in stranger.text
    assert get(base, "/api/card/kpi_views", role="").status_code == 403
    assert get(base, "/api/card/item_kpis").status_code == 400  # an item card needs ?item=


def test_overview_api_for_scripts(base: str) -> None:
    cards: dict[str, Any] = get(base, "/api/overview?period=today", "creator:c-small").json()[
        "cards"
    ]
    assert cards == {
        "views": 5.0,
        "purchases": 1.0,
        "watch_time_seconds": 0.0,
        "revenue_minor": {"EUR": 1250},
    }


def test_long_tables_page_on_the_server(base: str) -> None:
    first = get(base, "/api/card/content_table?period=today&sort=title").json()
    assert first["total_rows"] == 2 and first["page"] == 0 and first["pages"] == 1
    assert [r["title"] for r in first["rows"]] == ["The big one", "The small one"]
    searched = get(base, "/api/card/content_table?period=today&q=SMALL").json()
    assert [r["title"] for r in searched["rows"]] == ["The small one"]
    bad = get(base, "/api/card/content_table?page=two")
    assert bad.status_code == 400 and bad.json()["error"].startswith("page:")


def test_a_card_the_browser_holds_is_answered_not_modified(base: str) -> None:
    first = get(base, "/api/card/kpi_views")
    tag = first.headers["etag"]
    assert first.headers["cache-control"] == "private, no-cache"
    again = httpx.get(
        base + "/api/card/kpi_views", headers={"x-who": "owner", "If-None-Match": tag}
    )
    assert again.status_code == 304 and again.headers["etag"] == tag and not again.content
    # Another view is another body: the held one is not reused for it.
    other = httpx.get(
        base + "/api/card/kpi_views?period=all", headers={"x-who": "owner", "If-None-Match": tag}
    )
    assert other.status_code == 200 and other.headers["etag"] != tag


def test_ready_once_every_preset_period_is_warm(tmp_path: Any) -> None:
    """api/ready: 503 with Retry-After while warming (no sign-in asked), then 200; by then
    each preset period's cards are computed, for the owner and for the creators."""
    store = EmbeddedStore(tmp_path / "em.duckdb")
    now = datetime.now(UTC) - timedelta(minutes=1)
    store.write(
        [
            encode(View(content_id=f"v{i % 4}", creator_id=f"c{i % 4}", timestamp=now))
            for i in range(40)
        ]
    )
    app = create_dashboard(store, authenticate=who)
    with serve_asgi(app) as url:
        seen = set()
        for _ in range(600):
            answer = httpx.get(url + "/api/ready")
            seen.add(answer.status_code)
            if answer.status_code == 200:
                break
            assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert answer.status_code == 200 and answer.json() == {"ready": True}, seen
        computed = app.state.answers.computed
        for period in ("today", "7d", "30d", "90d", "all"):
            for role in ("owner", "creator:c1", "creator:c3"):
                card = get(url, f"/api/card/top_countries?period={period}", role)
                assert card.status_code == 200
        # Nothing was asked of the store: every answer was warm.
        assert app.state.answers.computed == computed
        fresh = get(url, "/api/card/kpi_views?period=7d&device=mobile", "owner")
        assert fresh.status_code == 200 and app.state.answers.computed > computed
    assert app.state.warmed.wait(60)
    store.close()


def test_every_warm_creators_default_view_is_built_before_ready(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default view's cards of each warm creator are built during the warm-up: the
    first visitors get them as they are, with no card built from the answers then."""
    from dataclasses import replace

    from edgemetrics.dashboard_kit import cards as cards_module

    store = EmbeddedStore(tmp_path / "em.duckdb")
    now = datetime.now(UTC) - timedelta(minutes=1)
    store.write(
        [
            encode(View(content_id=f"v{i % 6}", creator_id=f"c{i % 6}", timestamp=now))
            for i in range(60)
        ]
    )
    builds: list[str] = []
    real = cards_module.CARDS["kpi_views"]

    def counted(ctx: Any) -> Any:
        builds.append(ctx.principal.scope)
        return real.build(ctx)

    monkeypatch.setitem(cards_module.CARDS, "kpi_views", replace(real, build=counted))
    app = create_dashboard(store, authenticate=who)
    with serve_asgi(app) as url:
        for _ in range(600):
            if httpx.get(url + "/api/ready").status_code == 200:
                break
        assert {f"creator:c{i}" for i in range(6)} <= set(builds)
        before = len(builds)
        for i in range(6):
            card = get(url, "/api/card/kpi_views", f"creator:c{i}")
            assert card.status_code == 200 and card.json()["rows"][0]["value"] == 10.0
        assert len(builds) == before  # served as built
        # Another view is built when asked, from the creator's own answers.
        assert get(url, "/api/card/kpi_views?country=US", "creator:c2").status_code == 200
        assert builds[before:] == ["creator:c2"]
    assert app.state.warmed.wait(60)
    store.close()
