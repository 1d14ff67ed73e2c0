"""No personal data stored anywhere: a realistic workload with IPs, emails, phone numbers
and user agents in its inputs goes through the middleware, the decorators and track(),
the exporter, the spool, and the local collector (``/v1/batch`` and the browser path
``/v1/collect``) over loopback HTTP into a DuckDB file, then every stored byte (store,
spool, key store, captured logs) is scanned; the same host workload and browser requests go
to the Worker in workerd, whose recorded data points are scanned. The tracker in Chromium
is scanned by ``worker/test/privacy.test.mjs`` (``npm test``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from support import free_port

import edgemetrics
from edgemetrics.asgi import EdgeMetricsMiddleware
from edgemetrics.collect import CollectSettings
from edgemetrics.collect import routes as collect_routes
from edgemetrics.collector import CollectorSettings, create_collector_app
from edgemetrics.decorators import track_purchase
from edgemetrics.events import DbQuery, Error, InvalidEvent, Job, View
from edgemetrics.privacy import PrivacyStore
from edgemetrics.spool import Spool
from edgemetrics.store import DATASETS, EmbeddedStore
from edgemetrics.wire import decode_body

SECRET = "scan-secret"
ORIGIN = "https://app.example.com"
EMAIL = "ada.lovelace@example.com"
PHONE = "+14155552671"
IPV4 = "203.0.113.77"
IPV4_QUERY = "198.51.100.23"
IPV6 = "2001:db8::7:1"
UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Safari/605.1.15"
)
RAW_USERS = ("user-ada-1001", "user-bob-2002")
REFERER = f"https://mail.example.net/inbox?to={EMAIL}&from={PHONE}&ip={IPV4}"
NEEDLES = [
    EMAIL,
    "ada.lovelace%40example.com",
    "lovelace@",
    PHONE,
    "4155552671",
    IPV4,
    IPV4_QUERY,
    IPV6,
    UA,
    "AppleWebKit",
    "Macintosh",
    *RAW_USERS,
]


class CollectorThread:
    """The real collector app under uvicorn on a loopback port, in a thread."""

    def __init__(self, store: EmbeddedStore, keys: PrivacyStore, port: int) -> None:
        browser = CollectSettings(allowed_origins=(ORIGIN,), trust_proxy_headers=True)
        app = create_collector_app(
            store,
            settings=CollectorSettings(secret=SECRET, privacy=keys),
            extra_routes=collect_routes(store, browser),
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> CollectorThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "collector did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def host_app() -> Any:
    """A small platform: video pages, a purchase handler, a search that hits the database."""

    async def watch(request: Request) -> JSONResponse:
        user = request.headers.get("x-user")
        edgemetrics.track(
            View(
                content_id=request.path_params["video_id"],
                creator_id="creator-7",
                user_id=user,
                authenticated=user is not None,
                session_id="sess-1",
                referrer_source=request.headers.get("referer"),
                country="FR",
            )
        )
        return JSONResponse({"ok": True})

    def purchase_fields(result: dict[str, Any], request: Request) -> dict[str, Any]:
        return {
            "amount_minor": result["amount_minor"],
            "currency": "EUR",
            "transaction_id": result["transaction_id"],
            "content_id": result["content_id"],
            "user_id": request.headers.get("x-user"),
            "referrer_source": request.headers.get("referer"),
        }

    @track_purchase(purchase_fields)
    async def buy(request: Request) -> dict[str, Any]:
        return {
            "amount_minor": 499,
            "transaction_id": f"tx-{request.path_params['video_id']}",
            "content_id": request.path_params["video_id"],
        }

    async def buy_endpoint(request: Request) -> JSONResponse:
        return JSONResponse(await buy(request))

    async def search(request: Request) -> JSONResponse:
        query = request.query_params.get("q", "")
        # A careless fingerprint that still holds the literal the user typed.
        edgemetrics.track(
            DbQuery(
                fingerprint=f"SELECT id FROM videos WHERE owner_email = '{query}'",
                duration_ms=2.5,
                user_id=request.headers.get("x-user"),
            )
        )
        edgemetrics.track(Error(error_type="LookupError", route=str(request.url)))
        try:
            Job(job_name=f"notify {query}", duration_ms=1.0)
        except InvalidEvent as exc:
            logging.getLogger("edgemetrics").warning("refused: %s", exc)
        return JSONResponse({"results": []})

    app = Starlette(
        routes=[
            Route("/videos/{video_id}", watch),
            Route("/buy/{video_id}", buy_endpoint, methods=["POST"]),
            Route("/search", search),
        ]
    )
    return EdgeMetricsMiddleware(app, service="web")


def _scan_text(store_path: Path, spool_dir: Path, keys_path: Path) -> dict[str, bytes]:
    """Every stored byte, raw and decoded, by where it lives."""
    found: dict[str, bytes] = {}
    for path in [*store_path.parent.glob(store_path.name + "*"), *spool_dir.glob("*")]:
        if path.is_file():
            found[str(path)] = path.read_bytes()
    for path in keys_path.parent.glob(keys_path.name + "*"):
        found[str(path)] = path.read_bytes()
    return found


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    edgemetrics.shutdown()


def test_no_personal_data_reaches_any_stored_byte(
    workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store_path = workspace / "em.duckdb"
    spool_dir = workspace / "spool"
    keys_path = workspace / "keys.sqlite3"
    store = EmbeddedStore(store_path)
    collector_keys = PrivacyStore(keys_path)
    port = free_port()
    edgemetrics.configure(
        url=f"http://127.0.0.1:{port}/v1/batch",
        secret=SECRET,
        spool=spool_dir,
        pseudonymizer=keys_path,
        flush_interval=0.05,
        health_interval=None,
    )
    transport = httpx.ASGITransport(app=host_app())

    async def run(n: int) -> None:
        async with httpx.AsyncClient(transport=transport, base_url="http://platform") as http:
            await _atraffic(http, n)

    # Phase 1: the collector is up; everything lands in the store.
    with CollectorThread(store, collector_keys, port):
        asyncio.run(run(6))
        assert edgemetrics.flush()
        # Browsers to the local collector's /v1/collect (behind a proxy that sets the IP).
        browser = {
            "origin": ORIGIN,
            "user-agent": UA,
            "cf-connecting-ip": IPV4,
            "x-forwarded-for": f"{IPV4}, {IPV6}",
            "content-type": "text/plain;charset=UTF-8",
        }
        media = {"type": "view", "content_type": "video", "position": 0, "media_duration": 60}
        body = {
            "events": [
                {**media, "content_id": "video-b", "creator_id": "creator-7"},
                {**media, "content_id": EMAIL},
            ],
            "url": f"{ORIGIN}/watch/video-b?email={EMAIL}&phone={PHONE}",
            "referrer": REFERER,
        }
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/collect", json=body, headers=browser, timeout=10
        )
        assert answer.status_code == 200, answer.text
        assert [r["errors"][0]["rule"] for r in answer.json()["rejected"]] == ["pii_email"]
        # Purchases are durable: spooled on the handler's thread, replayed from the spool.
        deadline = time.monotonic() + 20
        while any(
            store.query(f"SELECT count(*) AS n FROM edgemetrics_{family}")[0]["n"] < n
            for family, n in (("content", 7), ("commerce", 6))
        ):
            assert time.monotonic() < deadline, "phase 1 events did not all arrive"
            time.sleep(0.05)
    # Phase 2: the collector is down; batches wait in the spool.
    asyncio.run(run(4))
    assert edgemetrics.flush()
    spool = Spool(spool_dir)
    assert spool.stats().events > 0, "phase 2 should have left batches in the spool"
    spooled = [decode_body(row.body, gzipped=True)[1] for row in spool.claim(1000)]
    spool.close()
    store.execute("CHECKPOINT")

    # Behaviour a user notices: the views, purchases, API calls and queries are counted,
    # user ids are pseudonyms, referrers are hosts, routes are templates.
    views = store.query("SELECT blob6 AS u, blob14 AS ref FROM edgemetrics_content")
    assert len(views) == 7  # 6 from the host app, 1 from the browser
    assert {r["ref"] for r in views} == {"mail.example.net"}
    pseudonyms = {r["u"] for r in views if r["u"]}
    assert len(pseudonyms) == 2 and all(p.startswith("k1-") for p in pseudonyms)
    assert store.query("SELECT count(*) AS n FROM edgemetrics_commerce")[0]["n"] == 6
    routes = {r["r"] for r in store.query("SELECT blob6 AS r FROM edgemetrics_platform")}
    assert {"/videos/{video_id}", "/buy/{video_id}", "/search", "(unmatched)"} <= routes
    fingerprints = {r["f"] for r in store.query("SELECT blob10 AS f FROM edgemetrics_platform")}
    assert "SELECT id FROM videos WHERE owner_email = '?'" in fingerprints
    assert any("refused: job_name" in r.getMessage() for r in caplog.records)

    # The scan: raw bytes of every file, every text cell of every table, every spooled
    # event decoded, every log record.
    corpus = _scan_text(store_path, spool_dir, keys_path)
    cells = []
    for table in DATASETS:
        for row in store.query(f"SELECT * FROM {table}"):
            cells.extend(str(v) for v in row.values())
    corpus["store cells"] = "\n".join(cells).encode()
    corpus["spooled events"] = repr(spooled).encode()
    # Our logs: edgemetrics' own logger and the collector's server. (httpx's records come
    # from this test's traffic generator, the "browser", which of course saw the inputs.)
    corpus["logs"] = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if r.name.startswith(("edgemetrics", "uvicorn"))
    ).encode()
    assert "edgemetrics" in corpus["logs"].decode()
    assert len(corpus["store cells"]) > 1000 and len(corpus["spooled events"]) > 500
    leaks = [
        (where, needle)
        for where, data in corpus.items()
        for needle in NEEDLES
        if needle.encode() in data
    ]
    assert leaks == []
    store.close()
    collector_keys.close()


async def _atraffic(http: httpx.AsyncClient, n: int) -> None:
    for i in range(n):
        user = RAW_USERS[i % 2]
        headers = {
            "user-agent": UA,
            "x-forwarded-for": f"{IPV4}, {IPV6}",
            "x-real-ip": IPV4,
            "referer": REFERER,
            "x-user": user,
        }
        r = await http.get(f"/videos/v{i}?email={EMAIL}&ip={IPV4_QUERY}", headers=headers)
        assert r.is_success
        assert (await http.post(f"/buy/v{i}?phone={PHONE}", headers=headers)).is_success
        r = await http.get("/search", params={"q": EMAIL}, headers=headers)
        assert r.is_success
        assert (await http.get(f"/users/{EMAIL}/profile", headers=headers)).status_code == 404


def test_the_worker_in_workerd_stores_no_personal_data(workspace: Path) -> None:
    """The same host workload shipped to the Worker (workerd via Miniflare), plus browser
    requests to ``/v1/collect`` carrying an IP, a user agent, an email in the page URL and
    in the referrer, and personal data in ids: the recorded AE data points hold none."""
    from worker_process import recorded_points, running_worker

    origin = "https://app.example.com"
    with running_worker(SECRET, origins=origin) as worker_url:
        recorded_points(worker_url)
        edgemetrics.configure(
            url=worker_url + "v1/batch",
            secret=SECRET,
            pseudonymizer=workspace / "keys.sqlite3",
            flush_interval=0.05,
            health_interval=None,
        )
        transport = httpx.ASGITransport(app=host_app())

        async def run() -> None:
            async with httpx.AsyncClient(transport=transport, base_url="http://platform") as http:
                await _atraffic(http, 4)

        asyncio.run(run())
        assert edgemetrics.flush()
        browser = {
            "origin": origin,
            "user-agent": UA,
            "cf-connecting-ip": IPV4,
            "x-forwarded-for": f"{IPV4}, {IPV6}",
            "content-type": "text/plain;charset=UTF-8",
        }
        media = {"type": "view", "content_type": "video", "position": 0, "media_duration": 60}
        body = {
            "events": [
                {**media, "content_id": "video-1", "creator_id": "creator-7"},
                {**media, "content_id": EMAIL},  # refused: pii_email
                {**media, "content_id": "video-2", "timezone": PHONE},  # refused: pii_phone
            ],
            "url": f"{origin}/watch/video-1?email={EMAIL}&phone={PHONE}",
            "referrer": REFERER,
        }
        answer = httpx.post(worker_url + "v1/collect", json=body, headers=browser, timeout=30)
        assert answer.status_code == 200, answer.text
        assert [e["errors"][0]["rule"] for e in answer.json()["rejected"]] == [
            "pii_email",
            "pii_phone",
        ]
        # Purchases are durable (spooled) only with a spool; here they went straight out.
        deadline = time.monotonic() + 20
        data = recorded_points(worker_url, reset=False)
        while (
            sum(p["dataset"] == "edgemetrics_commerce" for p in data["points"]) < 4
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
            data = recorded_points(worker_url, reset=False)
    edgemetrics.shutdown()

    points = data["points"]
    content = [p for p in points if p["dataset"] == "edgemetrics_content"]
    # 4 server views and 1 browser view; user ids are pseudonyms, referrers are hosts.
    assert len(content) == 5
    assert {p["blobs"][13] for p in content} == {"mail.example.net"}
    server_users = {p["blobs"][5] for p in content if p["blobs"][5]}
    assert len(server_users) == 2 and all(u.startswith("k1-") for u in server_users)
    assert sum(p["dataset"] == "edgemetrics_commerce" for p in points) == 4
    recorded = repr(points).encode()
    assert [n for n in NEEDLES if n.encode() in recorded] == []
