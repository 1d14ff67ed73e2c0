"""The dashboard in a real headless Chromium (Debian's ``chromium``), driven by Playwright,
against a host app on loopback serving a generated dataset from a DuckDB file.

Screenshots of every section land in ``artifacts/screenshots/``.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from dashboard_dataset import Dataset, generate, since_midnight
from edgemetrics.dashboard_kit import create_dashboard
from loopback_server import serve_asgi
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from edgemetrics.events import PlayStart, Purchase, View
from edgemetrics.principal import Principal
from edgemetrics.store import EmbeddedStore

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"


def who(request: Request) -> Principal | None:
    """The test host's sign-in: a cookie naming the owner or a creator."""
    value = request.cookies.get("who", "")
    if value == "owner":
        return Principal.owner()
    if value.startswith("creator:"):
        return Principal.creator(value.split(":", 1)[1])
    return None


def host_app(store: EmbeddedStore, titles: dict[str, str]) -> Starlette:
    dashboard = create_dashboard(
        store,
        authenticate=who,
        titles=lambda ids: {i: titles[i] for i in ids if i in titles},
        name="Test platform analytics",
    )
    host = Starlette(
        routes=[
            Route("/", lambda request: PlainTextResponse("host home")),
            Mount("/platform/analytics", app=dashboard),
        ]
    )
    host.state.warmed = dashboard.state.warmed
    return host


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedStore, Dataset]]:
    store = EmbeddedStore(tmp_path_factory.mktemp("dash") / "em.duckdb")
    data = generate(store)
    yield store, data
    store.close()


@pytest.fixture(scope="module")
def base(dataset: tuple[EmbeddedStore, Dataset]) -> Iterator[str]:
    store, data = dataset
    app = host_app(store, data.titles)
    with serve_asgi(app) as url:
        yield url + "/platform/analytics/"
    assert app.state.warmed.wait(60)  # no warm-up query left running on the store


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed: apt-get install chromium")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


def page_as(browser: Any, base: str, role: str, width: int = 1280) -> Any:
    context = browser.new_context(viewport={"width": width, "height": 900}, accept_downloads=True)
    context.add_cookies([{"name": "who", "value": role, "url": base}])
    return context.new_page()


def open_filled(page: Any, url: str) -> Any:
    response = page.goto(url)
    page.wait_for_selector("body[data-cards=filled]", timeout=20_000)
    return response


def card_states(page: Any) -> dict[str, str]:
    return page.eval_on_selector_all(
        "[data-card]",
        "els => Object.fromEntries(els.map(e => [e.dataset.card, e.dataset.state]))",
    )


def kpi_value(page: Any, card: str) -> str:
    return page.inner_text(f'[data-card="{card}"] [data-value]')


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_every_section_renders_with_data_for_the_owner(browser: Any, base: str) -> None:
    page = page_as(browser, base, "owner")
    for section in ("", "content", "revenue", "audience", "health"):
        response = open_filled(page, base + section)
        assert response.status == 200
        states = card_states(page)
        assert states and all(s == "ready" for s in states.values()), (section, states)
        shot(page, section or "overview")
    # The navigation reaches each section, Platform health included, for the owner.
    assert page.inner_text("nav").split("\n") == [
        "Overview",
        "Content",
        "Revenue",
        "Audience",
        "Platform health",
    ]
    page.context.close()


def test_overview_figures_match_the_generated_events(
    browser: Any, base: str, dataset: tuple[EmbeddedStore, Dataset]
) -> None:
    _, data = dataset
    page = page_as(browser, base, "owner")
    open_filled(page, base + "?period=7d")
    since = data.now.replace(hour=0, minute=0, second=0) - timedelta(days=6)
    views = data.count(View, lambda e: e.timestamp >= since)
    purchases = data.count(Purchase, lambda e: e.timestamp >= since)
    assert kpi_value(page, "kpi_views") == f"{views:,}"
    assert kpi_value(page, "kpi_purchases") == f"{purchases:,}"
    # The selector reflects the URL, and the change against the previous period is shown.
    assert page.input_value("select[name=period]") == "7d"
    assert "previous period" in page.inner_text('[data-card="kpi_views"]')
    page.context.close()


def test_filters_change_the_numbers_and_live_in_the_url(
    browser: Any, base: str, dataset: tuple[EmbeddedStore, Dataset]
) -> None:
    _, data = dataset
    page = page_as(browser, base, "owner")
    open_filled(page, base)
    everyone = data.count(View, lambda e: e.timestamp >= data.now - timedelta(days=29, hours=24))
    # Use the form as a person would: country, then device; each reloads with the URL.
    page.fill("input[name=country]", "fr")
    with page.expect_navigation():
        page.press("input[name=country]", "Enter")
    page.wait_for_selector("body[data-cards=filled]")
    with page.expect_navigation():
        page.select_option("select[name=device]", "mobile")
    page.wait_for_selector("body[data-cards=filled]")
    assert "country=FR" in page.url and "device=mobile" in page.url
    start = data.now.replace(hour=0, minute=0, second=0) - timedelta(days=29)

    def fr_mobile(e: Any) -> bool:
        return e.timestamp >= start and e.country == "FR" and e.device_class == "mobile"

    expected = data.count(View, fr_mobile)
    assert 0 < expected < everyone
    assert kpi_value(page, "kpi_views") == f"{expected:,}"
    # Reloading the shared URL gives the same view.
    open_filled(page, page.url)
    assert kpi_value(page, "kpi_views") == f"{expected:,}"
    assert page.input_value("input[name=country]") == "FR"

    # Audience filters narrow revenue too: signed-in viewers of audio only, all time.
    open_filled(page, base + "?period=all&content_type=audio&authenticated=authenticated")

    def signed_in_audio(e: Any) -> bool:
        return e.content_type == "audio" and e.authenticated

    assert kpi_value(page, "kpi_purchases") == f"{data.count(Purchase, signed_in_audio):,}"
    assert kpi_value(page, "kpi_views") == f"{data.count(View, signed_in_audio):,}"

    # Today, and a custom range covering exactly yesterday.
    open_filled(page, base + "?period=today")
    midnight = data.now - timedelta(seconds=since_midnight(data.now))
    assert (
        kpi_value(page, "kpi_views") == f"{data.count(View, lambda e: e.timestamp >= midnight):,}"
    )
    day = (midnight - timedelta(days=1)).date().isoformat()
    open_filled(page, base + f"?period=custom&from={day}&to={day}")
    yesterday = data.count(View, lambda e: midnight - timedelta(days=1) <= e.timestamp < midnight)
    assert kpi_value(page, "kpi_views") == f"{yesterday:,}"
    assert page.is_visible("input[name=from]")
    page.context.close()


def read_table(page: Any, card: str) -> list[list[str]]:
    """Every row of a paged table, following its Next button."""
    rows: list[list[str]] = []
    while True:
        rows += page.eval_on_selector_all(
            f'[data-card="{card}"] tbody tr',
            "trs => trs.map(tr => [...tr.children].map(td => td.innerText.trim()))",
        )
        nxt = page.query_selector(f'[data-card="{card}"] [data-page="1"]')
        if nxt is None or nxt.is_disabled():
            return rows
        label = page.inner_text(f'[data-card="{card}"] [data-page-label]')
        nxt.click()
        page.wait_for_function(
            "([sel, before]) => { const c = document.querySelector(sel);"
            " const l = c.querySelector('[data-page-label]');"
            " return c.dataset.state === 'ready' && l && l.innerText !== before; }",
            arg=[f'[data-card="{card}"]', label],
        )


def download_csv(page: Any, card: str) -> tuple[list[str], list[list[str]], list[str]]:
    with page.expect_download() as info:
        page.click(f'[data-card="{card}"] a.csv')
    text = Path(info.value.path()).read_text()
    comments = [line for line in text.splitlines() if line.startswith("#")]
    body = [line for line in text.splitlines() if not line.startswith("#")]
    table = list(csv.reader(io.StringIO("\n".join(body))))
    return table[0], table[1:], comments


def test_csv_download_matches_the_table(browser: Any, base: str) -> None:
    page = page_as(browser, base, "owner")
    open_filled(page, base + "content?period=90d&country=DE")
    shown = read_table(page, "content_table")
    header, rows, comments = download_csv(page, "content_table")
    assert header[:4] == ["Title", "Content id", "Type", "Views"]
    assert len(rows) == len(shown) > 10  # the table pages by 10; the CSV holds every row
    assert [(r[0], int(r[3])) for r in rows] == [(s[0], int(s[3].replace(",", ""))) for s in shown]
    assert "# scope: all creators" in comments
    assert "# filters: period: last 90 days; country: DE" in comments
    # Sorting and searching (done by the server, a page at a time) work on the same rows,
    # and the CSV then follows the table's order and search.
    table = '[data-card="content_table"]'
    page.click(f'{table} [data-sort="title"]')
    page.wait_for_selector(f'{table}[data-state=ready] th[aria-sort="ascending"]')
    assert page.inner_text(f"{table} tbody tr th") == min((r[0] for r in rows), key=str.casefold)
    page.click(f'{table} [data-sort="views"]')
    page.wait_for_selector(f'{table}[data-state=ready] th[aria-sort="descending"]')
    most = read_table(page, "content_table")
    assert [int(r[3].replace(",", "")) for r in most] == sorted(
        (int(r[3]) for r in rows), reverse=True
    )
    page.fill(f"{table} [data-search]", "number 3")
    page.wait_for_function(
        "sel => { const c = document.querySelector(sel);"
        " return c.dataset.state === 'ready' && c.querySelector('[data-page-label]')"
        ".innerText.includes('rows') && [...c.querySelectorAll('tbody th')]"
        ".every(t => t.innerText.includes('number 3')); }",
        arg=table,
    )
    found = read_table(page, "content_table")
    _, searched, _ = download_csv(page, "content_table")
    assert found and [r[0] for r in searched] == [r[0] for r in found]
    assert all("number 3" in r[0] for r in found)
    # A chart's CSV matches its numbers too.
    open_filled(page, base + "audience")
    header, rows, _ = download_csv(page, "top_countries")
    assert header == ["Country", "Views", "Share of views (%)"]
    bars = page.eval_on_selector_all(
        '[data-card="top_countries"] .bars li .bar-label', "els => els.map(e => e.innerText)"
    )
    assert bars == [r[0] for r in rows] and len(rows) == 10
    page.context.close()


def test_a_creator_sees_only_their_own_content(
    browser: Any, base: str, dataset: tuple[EmbeddedStore, Dataset]
) -> None:
    _, data = dataset
    page = page_as(browser, base, "creator:c-ana")
    open_filled(page, base + "content?period=all")
    assert "creator c-ana" in page.inner_text(".scope")
    titles = {r[0] for r in read_table(page, "content_table")}
    own = {i.title for i in data.items if i.creator_id == "c-ana"}
    assert titles and titles <= own
    assert "Platform health" not in page.inner_text("nav")
    views = data.count(View, lambda e: e.creator_id == "c-ana")
    open_filled(page, base + "?period=all")
    assert kpi_value(page, "kpi_views") == f"{views:,}"
    shot(page, "creator-overview")
    # Another creator's item: a page that says why, with 403.
    other = next(i for i in data.items if i.creator_id == "c-ben")
    response = page.goto(base + f"content/{other.content_id}")
    assert response.status == 403
    assert "another creator" in page.inner_text("main")
    shot(page, "creator-forbidden")
    response = page.goto(base + "health")
    assert response.status == 403 and "owner" in page.inner_text("main")
    # Their own item's page works.
    mine = next(i for i in data.items if i.creator_id == "c-ana" and i.duration)
    open_filled(page, base + f"content/{mine.content_id}?period=all")
    assert all(s == "ready" for s in card_states(page).values())
    page.context.close()


def test_a_content_page_shows_its_figures(
    browser: Any, base: str, dataset: tuple[EmbeddedStore, Dataset]
) -> None:
    _, data = dataset
    page = page_as(browser, base, "owner")
    open_filled(page, base + "content?period=all")
    # Follow the most viewed media item's link from the top 10, as a person would.
    links = page.eval_on_selector_all(
        '[data-card="top_views"] .bars a', "as => as.map(a => a.getAttribute('href'))"
    )
    content_id = next(
        href.split("/")[1].split("?")[0]
        for href in links
        if data.item(href.split("/")[1].split("?")[0]).duration
    )
    item = data.item(content_id)
    with page.expect_navigation():
        page.click(f'[data-card="top_views"] a[href^="content/{content_id}?"]')
    assert "period=all" in page.url
    page.wait_for_selector("body[data-cards=filled]")
    assert item.title in page.inner_text("main h2")
    states = card_states(page)
    assert all(s == "ready" for s in states.values()), states
    text = page.inner_text('[data-card="item_kpis"]')
    views = data.count(View, lambda e: e.content_id == item.content_id)
    assert f"{views:,}" in text
    plays = data.count(PlayStart, lambda e: e.content_id == item.content_id)
    done = sum(1 for e in data.events if e.type == "complete" and e.content_id == item.content_id)
    assert f"{100 * done / plays:.1f}%" in text
    shot(page, "content-item")
    page.context.close()


def test_audience_time_zones_and_shares(
    browser: Any, base: str, dataset: tuple[EmbeddedStore, Dataset]
) -> None:
    _, data = dataset
    page = page_as(browser, base, "owner")
    open_filled(page, base + "audience?period=all")
    zones = read_table(page, "timezones")
    views = data.count(View)
    paris = data.count(View, lambda e: e.timezone == "Europe/Paris")
    row = next(r for r in zones if r[0] == "Europe/Paris")
    assert row[1:] == [f"{paris:,}", f"{100 * paris / views:.1f}%"]
    page.context.close()


def test_the_owner_sees_platform_health(browser: Any, base: str) -> None:
    page = page_as(browser, base, "owner")
    open_filled(page, base + "health?period=7d")
    endpoints = page.eval_on_selector_all(
        '[data-card="errors_by_endpoint"] tbody th', "ths => ths.map(t => t.innerText)"
    )
    assert "web POST /api/purchase" in endpoints
    kpis = page.inner_text('[data-card="health_kpis"]')
    assert "Average API response time" in kpis and "ms" in kpis
    assert page.inner_text('[data-card="pipeline"] tbody th') == "exporter"
    assert "spool depth" in page.inner_text('[data-card="pipeline"] thead')
    page.context.close()


def test_keyboard_and_phone(browser: Any, base: str) -> None:
    page = page_as(browser, base, "owner", width=390)
    open_filled(page, base + "content")
    # Nothing wider than the phone's screen but the tables' own scroll boxes.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    shot(page, "content-phone")
    # Tab reaches the first section link and Enter follows it.
    page.keyboard.press("Tab")  # skip link
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Overview"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.context.close()


def test_error_pages_say_what_happened(browser: Any, tmp_path: Path) -> None:
    from edgemetrics.query import CloudflareBackend

    empty = EmbeddedStore(tmp_path / "empty.duckdb")
    dashboard = create_dashboard(empty, authenticate=who)
    app = Starlette(routes=[Mount("/a", app=dashboard)])
    with serve_asgi(app) as url:
        page = page_as(browser, url + "/a/", "owner")
        open_filled(page, url + "/a/")
        page.wait_for_selector("body[data-no-data=true]")
        assert "No data yet" in page.inner_text("#status")
        shot(page, "error-no-data")
        anonymous = browser.new_page()
        response = anonymous.goto(url + "/a/")
        assert response.status == 403 and "not allowed" in anonymous.inner_text("main")
        anonymous.close()
        page.context.close()
    assert dashboard.state.warmed.wait(60)
    empty.close()
    # A backend nobody answers on: the shell still renders, and says so.
    from support import free_port

    down = CloudflareBackend("acct", "t", base_url=f"http://127.0.0.1:{free_port()}", retries=0)
    app = Starlette(routes=[Mount("/a", app=create_dashboard(down, authenticate=who))])
    with serve_asgi(app) as url:
        page = page_as(browser, url + "/a/", "owner")
        open_filled(page, url + "/a/")
        assert set(card_states(page).values()) == {"error"}
        assert "unreachable" in page.inner_text("#status")
        shot(page, "error-backend-down")
        page.context.close()


def test_sampled_figures_show_as_estimates_with_intervals(browser: Any, tmp_path: Path) -> None:
    from edgemetrics.layout import encode

    store = EmbeddedStore(tmp_path / "sampled.duckdb")
    # Each stored row stands for 20 views: AE sampled them at write time.
    store.write([encode(View(content_id="v1", creator_id="c1", country="FR"), 20)])
    store.write(
        [encode(View(content_id="v1", creator_id="c1", country="DE"), 20) for _ in range(30)]
    )
    dashboard = create_dashboard(store, authenticate=who)
    app = Starlette(routes=[Mount("/a", app=dashboard)])
    with serve_asgi(app) as url:
        page = page_as(browser, url + "/a/", "owner")
        open_filled(page, url + "/a/?period=today")
        card = page.inner_text('[data-card="kpi_views"]')
        assert "Estimate" in card and "≈620 (95% CI" in card
        open_filled(page, url + "/a/audience?period=today")
        assert "≈600 (95% CI" in page.inner_text('[data-card="top_countries"]')
        shot(page, "estimates")
        page.context.close()
    assert dashboard.state.warmed.wait(60)
    store.close()
