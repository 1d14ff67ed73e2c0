"""The dashboard's Starlette app: page shells that render first, one JSON endpoint per card.

Routes, relative to wherever the app is mounted:

* ``/``, ``/content``, ``/content/{id}``, ``/revenue``, ``/audience``, ``/health``: pages;
* ``/api/card/{card}``: one card's answer (``?item=`` for a content item's cards);
* ``/api/overview``: the Overview's figures in one answer (for scripts and the demo);
* ``/api/status``: whether there is any data yet;
* ``/export/{card}.csv``, ``/export/{section}.zip``, ``/export/all.zip``: downloads.

Every route takes the filters of :mod:`edgemetrics.dashboard_kit.filters` from the URL.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgemetrics.dashboard_kit.answers import Overloaded, SharedAnswers
from edgemetrics.dashboard_kit.cards import CARDS, SECTIONS, Card, CardData, Context
from edgemetrics.dashboard_kit.export import to_csv, to_zip
from edgemetrics.dashboard_kit.filters import FilterError, ViewFilters
from edgemetrics.dashboard_kit.pages import error_page, shell
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from edgemetrics.query import (
    AccessDenied,
    BackendError,
    EmbeddedBackend,
    Engine,
    Filter,
    Principal,
    Query,
    QueryError,
    Result,
    TimeRange,
)
from edgemetrics.query.model import MAX_LIMIT
from edgemetrics.store import EmbeddedStore

log = logging.getLogger("edgemetrics.dashboard")

Authenticate = Callable[[Request], Principal | None]
Titles = Callable[[Iterable[str]], Mapping[str, str]]

STATIC = Path(__file__).parent / "static"
UNREACHABLE = (
    "The analytics backend did not answer. The figures will be back once it does; "
    "try again in a minute."
)
BUSY = "Many people are looking right now; this card is asked again in a moment."


def _deny(request: Request) -> None:
    return None


def _no_titles(content_ids: Iterable[str]) -> Mapping[str, str]:
    return {}


def as_engine(backend: Any, *, cache_ttl: float = 0.0) -> Engine:
    """An :class:`~edgemetrics.query.Engine` over an embedded store, a backend, or itself.

    The dashboard caches answers itself (:mod:`edgemetrics.dashboard_kit.answers`), so an
    engine it builds has the engine's own cache off by default.
    """
    if isinstance(backend, Engine):
        return backend
    if isinstance(backend, EmbeddedStore):
        return Engine(EmbeddedBackend(backend), cache_ttl=cache_ttl)
    if hasattr(backend, "run") and hasattr(backend, "dialect"):
        return Engine(backend, cache_ttl=cache_ttl)
    raise TypeError(
        "backend: expected an EmbeddedStore, a query backend (EmbeddedBackend, "
        f"CloudflareBackend) or an Engine, got {type(backend).__name__}"
    )


def create_dashboard(
    backend: Any,
    *,
    authenticate: Authenticate = _deny,
    titles: Titles | None = None,
    name: str = "Analytics",
    cache_ttl: float = 30.0,
    warm: bool = True,
    warm_creators: int = 5000,
    freeze_gc: bool = False,
) -> Starlette:
    """Build the dashboard app to mount in the host.

    ``backend``: an :class:`~edgemetrics.store.EmbeddedStore`, a query backend or an engine.
    ``authenticate(request)`` returns the viewer's principal (owner, or a creator) or None
    to refuse; the default refuses everyone. ``titles(content_ids)`` maps content ids to the
    names the host's CMS gives them. Answers are shared per scope: fresh for ``cache_ttl``
    seconds, then served while one refresh runs (up to five minutes old under a load the
    backend cannot keep up with; see :mod:`~edgemetrics.dashboard_kit.answers`).
    ``warm``: on its first request the dashboard computes, in the background, every
    section's default view for the owner and for the ``warm_creators`` creators with the
    most views in the default period, so the first visitors find them ready, and builds
    those creators' cards of the default view (``api/status`` says ``"warming": true``
    until that is done).
    ``freeze_gc``: after the warm-up, run a full collection and ``gc.freeze()`` so the
    collector's full passes skip the many long-lived warm answers (and everything else alive
    then, the host's objects included: process-wide, hence the host's choice; off by
    default).

    >>> import os, tempfile
    >>> from starlette.testclient import TestClient
    >>> store = EmbeddedStore(os.path.join(tempfile.mkdtemp(), "em.duckdb"))
    >>> app = create_dashboard(store, authenticate=lambda r: Principal.owner())
    >>> TestClient(app).get("/api/card/kpi_views").json()["rows"][0]["value"]
    0.0
    """
    engine = SharedAnswers(as_engine(backend), ttl=cache_ttl)
    # Built cards (rows merged, titles looked up) for a TTL: paging and sorting a long table
    # reuse them instead of rebuilding.
    finished = BuiltCards(cache_ttl, max_entries=BUILT_CARDS)
    # Handlers that query run on the dashboard's own threads, so the server's shared pool
    # (static files, the shell) never waits behind a slow backend.
    # Many: a handler mostly waits for an answer being computed (no CPU, no GIL held).
    workers = ThreadPoolExecutor(max_workers=256, thread_name_prefix="em-dashboard")

    async def run_in_workers(handler: Callable[[Request], Response], request: Request) -> Response:
        queued = time.monotonic()

        def run() -> Response:
            # One budget from the request's arrival for everything it waits for (a thread,
            # slots, answers): past it the viewer is told to ask again, not left hanging.
            left = engine.queue_timeout - (time.monotonic() - queued)
            if left <= 0:
                engine.shed += 1
                return JSONResponse({"error": BUSY}, status_code=503, headers={"Retry-After": "1"})
            with engine.deadline(left):
                return handler(request)

        return await asyncio.get_running_loop().run_in_executor(workers, run)

    def offload(handler: Callable[[Request], Response]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return await run_in_workers(handler, request)

        return endpoint

    title_hook = titles or _no_titles
    warmed = threading.Event()
    warming = threading.Lock()
    if not warm or cache_ttl <= 0:
        warmed.set()

    def start_warming() -> None:
        if warmed.is_set() or not warming.acquire(blocking=False):
            return
        threading.Thread(target=warm_default_views, name="em-warm", daemon=True).start()

    def warm_default_views() -> None:
        """Every section's view of each preset period (the default, 30 days, first), owner
        and creators, asked as background work; the owner's and the first creator's cards
        are kept built, and then every warm creator's cards of the default view (most
        viewed first, as many as half the built-card memo holds): the first visitors'
        pages are ready, not built from the answers while everyone arrives at once."""
        started = time.monotonic()
        quiet = Background(engine)
        defaults = ViewFilters.from_params({})
        try:
            top = engine.run(
                Query(
                    ("views",),
                    ("creator",),
                    time_range=defaults.time_range(),
                    order_by=("-views",),
                    limit=max(1, min(warm_creators, MAX_LIMIT)),
                ),
                Principal.owner(),
                background=True,
            )
            creators = [r["creator"] for r in top.rows if r["creator"]][:warm_creators]
            engine.warm(creators)
            viewers = [Principal.owner()] + [Principal.creator(c) for c in creators[:1]]

            def build(principal: Principal, filters: ViewFilters) -> None:
                for card in CARDS.values():
                    if card.section == "item" or (card.owner_only and principal.role != "owner"):
                        continue
                    ctx = Context(quiet, principal, filters, title_hook, now=cache_clock(cache_ttl))
                    built = card.build(ctx)
                    key = (principal.scope, card.id, tuple(sorted(filters.params().items())))
                    finished.put((*key, None), built)

            for period in WARM_PERIODS:
                filters = ViewFilters.from_params({"period": period})
                for principal in viewers:
                    build(principal, filters)
            # Built last, so they are fresh for a TTL once api/ready says 200.
            per_creator = sum(1 for c in CARDS.values() if c.section not in ("item", "health"))
            room = max(0, (BUILT_CARDS // 2) // max(1, per_creator))
            for creator in creators[1:room]:
                build(Principal.creator(creator), defaults)
            log.info(
                "edgemetrics dashboard: every preset period's views of the owner and %d "
                "creators ready in %.1f s",
                len(creators),
                time.monotonic() - started,
            )
        except Exception as exc:  # a backend down: viewers get its error pages as usual
            log.warning("edgemetrics dashboard: warming the default views stopped: %s", exc)
        finally:
            engine.warmed()
            if freeze_gc:
                # The warm answers are many long-lived objects: moved out of the cyclic
                # collector's generations, so its full passes do not walk them all while
                # the first viewers are served (freed by reference counting as usual).
                gc.collect()
                gc.freeze()
            warmed.set()

    def base_of(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/") + "/"

    def viewer(request: Request) -> Principal | None:
        start_warming()
        return authenticate(request)

    def scope_text(principal: Principal) -> str:
        return "all creators" if principal.role == "owner" else f"creator {principal.creator_id}"

    def not_allowed_page(request: Request, message: str) -> Response:
        return error_page(403, "Not allowed", message, base=base_of(request))

    def item_access(principal: Principal, content_id: str) -> str | None:
        """Why ``principal`` may not see ``content_id``, or None when it may."""
        if principal.role == "owner":
            return None
        owners = engine.run(
            Query(
                ("views", "plays"),
                ("creator",),
                filters=(Filter("content", "eq", content_id),),
                time_range=TimeRange.preset("all"),
            ),
            Principal.owner(),
        )
        creators = {r["creator"] for r in owners.rows}
        if creators and principal.creator_id not in creators:
            return "This content belongs to another creator; you can only see your own."
        return None

    async def page(request: Request) -> Response:
        section = request.path_params.get("section", "overview")
        if section not in SECTIONS:
            return error_page(
                404, "No such page", f"There is no section {section!r}.", base=base_of(request)
            )
        if section == "overview" and not request.url.path.endswith("/"):
            return RedirectResponse(request.url.path + "/", status_code=307)
        principal = viewer(request)
        if principal is None:
            return not_allowed_page(
                request,
                "You are not allowed to see these analytics. Sign in to the platform first.",
            )
        if section == "health" and principal.role != "owner":
            return not_allowed_page(request, "Platform health is for the platform owner only.")
        return Response(
            shell(
                base=base_of(request),
                name=name,
                section=section,
                scope=scope_text(principal),
                owner=principal.role == "owner",
            ),
            media_type="text/html",
        )

    def item_page(request: Request) -> Response:
        principal = viewer(request)
        if principal is None:
            return not_allowed_page(request, "You are not allowed to see these analytics.")
        content_id = request.path_params["content_id"]
        try:
            Filter("content", "eq", content_id)
            reason = item_access(principal, content_id)
        except QueryError as exc:
            return error_page(400, "Not a content id", str(exc), base=base_of(request))
        except BackendError:
            return error_page(503, "Analytics unavailable", UNREACHABLE, base=base_of(request))
        if reason is not None:
            return not_allowed_page(request, reason)
        title = title_hook([content_id]).get(content_id)
        return Response(
            shell(
                base=base_of(request),
                name=name,
                section="content",
                scope=scope_text(principal),
                owner=principal.role == "owner",
                item=content_id,
                item_title=title,
            ),
            media_type="text/html",
        )

    def answer(request: Request, card: Card) -> CardData | Response:
        """Run ``card`` for this request, or the error response to send instead."""
        data = attempt(request, card, cached_only=False)
        assert data is not None
        return data

    def attempt(request: Request, card: Card, *, cached_only: bool) -> CardData | Response | None:
        """Run ``card`` for this request, or the error response to send instead.

        ``cached_only``: answer only from built cards (None when it would need the backend),
        so the event loop can serve what is ready without queueing behind slow queries."""
        principal = viewer(request)
        if principal is None:
            return JSONResponse(
                {"error": "You are not allowed to see these analytics."}, status_code=403
            )
        if card.owner_only and principal.role != "owner":
            return JSONResponse(
                {"error": "Platform health is for the platform owner only."}, status_code=403
            )
        try:
            filters = ViewFilters.from_params(request.query_params)
        except FilterError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        item = request.query_params.get("item")
        if (card.section == "item") != bool(item):
            return JSONResponse(
                {"error": "item: give a content id for an item card, and only for one [required]"},
                status_code=400,
            )
        if cached_only and item:
            return None
        try:
            if item:
                reason = item_access(principal, item)
                if reason is not None:
                    return JSONResponse({"error": reason}, status_code=403)
            key = (principal.scope, card.id, tuple(sorted(filters.params().items())), item)
            built = finished.get(key)
            if built is None and cached_only:
                return None
            if built is None:
                ctx = Context(
                    engine,
                    principal,
                    filters,
                    title_hook,
                    content_id=item,
                    now=cache_clock(cache_ttl),
                )
                built = card.build(ctx)
                finished.put(key, built)
            if card.paged:
                built = built.arranged(
                    search=request.query_params.get("q", ""),
                    sort=request.query_params.get("sort", ""),
                )
            return built
        except AccessDenied as exc:
            return JSONResponse({"error": str(exc)}, status_code=403)
        except Overloaded:
            # Shed rather than left to time out: the page asks again after Retry-After.
            return JSONResponse({"error": BUSY}, status_code=503, headers={"Retry-After": "1"})
        except BackendError as exc:
            log.warning("edgemetrics dashboard: backend error on %s: %s", card.id, exc)
            return JSONResponse({"error": UNREACHABLE}, status_code=503)
        except QueryError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    def card_api(request: Request) -> Response:
        card = CARDS.get(request.path_params["card"])
        if card is None:
            return JSONResponse({"error": "card: no such card [enum]"}, status_code=404)
        return card_response(request, card, answer(request, card))

    async def card_endpoint(request: Request) -> Response:
        card = CARDS.get(request.path_params["card"])
        if card is not None:
            ready = attempt(request, card, cached_only=True)
            if ready is not None:
                return card_response(request, card, ready)
        return await run_in_workers(card_api, request)

    def card_response(request: Request, card: Card, data: CardData | Response) -> Response:
        if isinstance(data, Response):
            return data
        body = data.to_json()
        if card.paged:
            try:
                number = int(request.query_params.get("page", "0"))
            except ValueError:
                return JSONResponse(
                    {"error": "page: must be a whole number [integer]"}, status_code=400
                )
            body = data.page(number, PAGE_SIZE)
            body.update(
                sort=request.query_params.get("sort", ""), q=request.query_params.get("q", "")
            )
        sent = JSONResponse({"id": card.id, "title": card.title, "kind": card.kind, **body})
        return revalidated(request, sent)

    def csv_export(request: Request) -> Response:
        card = CARDS.get(request.path_params["card"])
        if card is None:
            return JSONResponse({"error": "card: no such card [enum]"}, status_code=404)
        data = answer(request, card)
        if isinstance(data, Response):
            return data
        principal = viewer(request)
        assert principal is not None
        text = to_csv(
            _csv_title(card, request), data, scope=scope_text(principal), filters=_describe(request)
        )
        return Response(
            text,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{_file_name(card, request)}"'},
        )

    def zip_export(request: Request) -> Response:
        which = request.path_params["which"]
        principal = viewer(request)
        if principal is None:
            return not_allowed_page(request, "You are not allowed to see these analytics.")
        sections = [s for s in SECTIONS if principal.role == "owner" or s != "health"]
        if which == "item":
            sections = ["item"]
        elif which != "all":
            if which not in sections:
                return not_allowed_page(request, "You may not export this section.")
            sections = [which]
        files = []
        for card in CARDS.values():
            if card.section not in sections:
                continue
            data = answer(request, card)
            if isinstance(data, Response):
                return data
            files.append(
                (
                    f"{card.section}/{_file_name(card, request)}",
                    to_csv(
                        _csv_title(card, request),
                        data,
                        scope=scope_text(principal),
                        filters=_describe(request),
                    ),
                )
            )
        return Response(
            to_zip(files),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="analytics-{which}.zip"'},
        )

    def overview_api(request: Request) -> Response:
        parts = {}
        for card_id in ("kpi_views", "kpi_purchases", "kpi_watch_time", "kpi_revenue"):
            data = answer(request, CARDS[card_id])
            if isinstance(data, Response):
                return data
            parts[card_id] = data
        revenue = {
            r["currency"]: round(r["value"] * 10 ** _exponent(r["currency"]))
            for r in parts["kpi_revenue"].rows
            if r["value"]
        }
        return JSONResponse(
            {
                "cards": {
                    "views": parts["kpi_views"].rows[0]["value"],
                    "purchases": parts["kpi_purchases"].rows[0]["value"],
                    "watch_time_seconds": parts["kpi_watch_time"].rows[0]["value"],
                    "revenue_minor": revenue,
                },
                "estimated": any(p.estimated for p in parts.values()),
            }
        )

    async def ready_api(request: Request) -> Response:
        """For a load balancer's health check: 200 once the warm-up is done (every preset
        period's views computed), 503 with Retry-After before; no sign-in needed, and it
        says nothing but that."""
        start_warming()
        if warmed.is_set():
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False}, status_code=503, headers={"Retry-After": "1"})

    def status_api(request: Request) -> Response:
        principal = viewer(request)
        if principal is None:
            return JSONResponse(
                {"error": "You are not allowed to see these analytics."}, status_code=403
            )
        try:
            result = engine.run(
                Query(("views", "purchases"), time_range=TimeRange.preset("all")), principal
            )
        except BackendError:
            return JSONResponse({"error": UNREACHABLE}, status_code=503)
        return JSONResponse({"has_data": result.row_count > 0, "warming": not warmed.is_set()})

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/api/card/{card}", card_endpoint),
            Route("/api/overview", offload(overview_api)),
            Route("/api/status", offload(status_api)),
            Route("/api/ready", ready_api),
            Route("/export/{card}.csv", offload(csv_export)),
            Route("/export/{which}.zip", offload(zip_export)),
            Route("/content/{content_id:path}", offload(item_page)),
            Route("/{section}", page),
            Mount("/static", app=VendoredAssets(STATIC), name="static"),
        ]
    )
    # Set once the warm-up is done (or off): a host closing the store waits for it.
    app.state.warmed = warmed
    app.state.answers = engine
    return app


PAGE_SIZE = 10
# Built cards kept (each a card's rows for one scope and view): the warm-up fills up to half.
BUILT_CARDS = 20_000
# The periods warmed before api/ready says 200, most asked first.
WARM_PERIODS = ("30d", "7d", "90d", "today", "all")


def revalidated(request: Request, response: Response) -> Response:
    """``response`` with an ETag (its body's digest), or 304 Not Modified when the browser
    already holds that body. ``private, no-cache``: only the viewer's browser keeps it, and
    asks each time (a card's figures change within a TTL; the answer is one small 304).

    >>> from starlette.requests import Request
    >>> r = revalidated(Request({"type": "http", "headers": []}), Response(b"{}"))
    >>> r.headers["etag"], r.headers["cache-control"]
    ('"bf21a9e8fbc5a3846fb05b4fa0859e0917b2202f"', 'private, no-cache')
    """
    tag = '"' + hashlib.sha1(bytes(response.body), usedforsecurity=False).hexdigest() + '"'
    headers = {"ETag": tag, "Cache-Control": "private, no-cache"}
    if tag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    response.headers.update(headers)
    return response


class Background:
    """Shared answers asked as background work (warming), for :class:`Context`."""

    def __init__(self, answers: SharedAnswers) -> None:
        self.answers = answers

    def run(self, query: Query, principal: Principal) -> Result:
        return self.answers.run(query, principal, background=True)

    def run_keyed(self, query: Query, principal: Principal, name: str) -> Result:
        return self.answers.run_keyed(query, principal, name, background=True)


ASSET_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


class VendoredAssets:
    """The vendored assets, read once and served from memory on the event loop (no file
    lookups, no thread hop). URLs that carry the content hash (``?v=``) are kept a year by
    browsers; an ETag answers a revalidation with 304.

    >>> from starlette.testclient import TestClient
    >>> client = TestClient(VendoredAssets(STATIC))
    >>> r = client.get("/dashboard.css?v=1")
    >>> r.status_code, r.headers["content-type"], r.headers["cache-control"]
    (200, 'text/css; charset=utf-8', 'public, max-age=31536000, immutable')
    >>> client.get("/dashboard.css", headers={"If-None-Match": r.headers["etag"]}).status_code
    304
    >>> client.get("/nope.js").status_code, client.post("/dashboard.css").status_code
    (404, 405)
    """

    def __init__(self, directory: Path) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        for path in sorted(directory.iterdir()):
            if path.is_file():
                body = path.read_bytes()
                digest = hashlib.sha1(body, usedforsecurity=False).hexdigest()
                kind = ASSET_TYPES.get(path.suffix, "application/octet-stream")
                self.files["/" + path.name] = (body, kind, f'"{digest}"')

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "/")
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # Starlette's Mount leaves the prefix in path
            path = path[len(root) :]
        response: Response
        if scope["method"] not in ("GET", "HEAD"):
            response = Response("Method Not Allowed", status_code=405, headers={"Allow": "GET"})
        elif (found := self.files.get(path)) is None:
            response = Response("Not Found", status_code=404, media_type="text/plain")
        else:
            body, kind, tag = found
            held = b"v=" in scope.get("query_string", b"")
            headers = {
                "ETag": tag,
                "Cache-Control": "public, max-age=31536000, immutable" if held else "no-cache",
            }
            if tag in Request(scope).headers.get("if-none-match", ""):
                response = Response(status_code=304, headers=headers)
            else:
                response = Response(body, media_type=kind, headers=headers)
        await response(scope, receive, send)


class BuiltCards:
    """A small expiring memo of built cards, keyed by scope, card, filters and item."""

    def __init__(self, ttl: float, max_entries: int = 5000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._cards: OrderedDict[Hashable, tuple[float, CardData]] = OrderedDict()

    def get(self, key: Hashable) -> CardData | None:
        with self._lock:
            held = self._cards.get(key)
            if held is None or time.monotonic() - held[0] >= self.ttl:
                return None
            self._cards.move_to_end(key)
            return held[1]

    def put(self, key: Hashable, data: CardData) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._cards[key] = (time.monotonic(), data)
            self._cards.move_to_end(key)
            while len(self._cards) > self.max_entries:
                self._cards.popitem(last=False)


def cache_clock(ttl: float) -> datetime:
    """Now, rounded up to the next multiple of the cache TTL.

    Ranges the dashboard computes itself (the previous period, this month, the last 24 h)
    end at this instant, so their cache keys stay the same for a TTL instead of changing
    every second; they end at most one TTL in the future, where there is no data yet.

    >>> cache_clock(30).second % 30
    0
    """
    step = max(1.0, ttl)
    stamp = datetime.now(UTC).timestamp()
    return datetime.fromtimestamp(math.ceil(stamp / step) * step, UTC)


def _exponent(currency: str) -> int:
    from edgemetrics.currencies import minor_unit_exponent

    return minor_unit_exponent(currency)


def _describe(request: Request) -> str:
    text = ViewFilters.from_params(request.query_params).describe()
    item = request.query_params.get("item")
    return f"{text}; content: {item}" if item else text


def _csv_title(card: Card, request: Request) -> str:
    section = "Content item" if card.section == "item" else SECTIONS[card.section]
    return f"{section}: {card.title}"


def _file_name(card: Card, request: Request) -> str:
    item = request.query_params.get("item")
    stem = f"{card.id}-{item}" if item else card.id
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)
    return f"{safe}.csv"
