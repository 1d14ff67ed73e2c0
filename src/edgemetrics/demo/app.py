"""The demo: a small creator platform instrumented with edgemetrics.

It serves a catalogue API (middleware records every call), media pages, a playback
endpoint the player posts its events to, a purchase endpoint decorated with
``track_purchase``, and the dashboard at ``/analytics``.
"""

from __future__ import annotations

import html
import itertools
import time
from datetime import datetime
from typing import Any

from fastapi import BackgroundTasks, FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

import edgemetrics
from edgemetrics.asgi import EdgeMetricsMiddleware
from edgemetrics.dashboard_kit import create_dashboard
from edgemetrics.decorators import track_job, track_purchase
from edgemetrics.demo.catalog import BY_ID, CATALOG, Item
from edgemetrics.events import ContentEvent, InvalidEvent, parse_event
from edgemetrics.principal import Principal
from edgemetrics.store import EmbeddedStore

_transactions = itertools.count(1)


class PurchaseRequest(BaseModel):
    content_id: str
    user_id: str | None = None
    country: str | None = None
    device_class: str | None = None
    # The traffic generator replays a month of history; a real checkout leaves this unset.
    purchased_at: datetime | None = None


class PlaybackBatch(BaseModel):
    events: list[dict[str, Any]] = Field(max_length=500)


def _purchase_fields(result: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    fields = {
        key: result[key]
        for key in (
            "amount_minor",
            "currency",
            "transaction_id",
            "content_id",
            "creator_id",
            "content_type",
            "user_id",
            "country",
            "device_class",
        )
        if result.get(key) is not None
    }
    fields["authenticated"] = result.get("user_id") is not None
    if result.get("purchased_at") is not None:
        fields["timestamp"] = result["purchased_at"]
    return fields


@track_purchase(_purchase_fields)
def checkout(item: Item, request: PurchaseRequest) -> dict[str, Any]:
    """Charge for one item (the demo's payment always succeeds)."""
    return {
        "transaction_id": f"tx-{next(_transactions):08d}",
        "amount_minor": item.price_minor,
        "currency": item.currency,
        "content_id": item.content_id,
        "creator_id": item.creator_id,
        "content_type": item.content_type,
        "user_id": request.user_id,
        "country": request.country,
        "device_class": request.device_class,
        "purchased_at": request.purchased_at,
    }


@track_job("send_receipt", queue="email", enqueued_at=lambda tx, enqueued: enqueued)
def send_receipt(transaction_id: str, enqueued: float) -> None:
    """Render and hand a receipt to the mail relay (the demo only takes the time)."""
    time.sleep(0.002)


def create_app(store: EmbeddedStore) -> FastAPI:
    """The demo platform app, instrumented, with the dashboard mounted at /analytics."""
    app = FastAPI(title="edgemetrics demo platform")

    @app.get("/", response_class=HTMLResponse)
    def home() -> str:
        links = "".join(
            f'<li><a href="/watch/{item.content_id}">{html.escape(item.title)}</a> '
            f"({item.content_type})</li>"
            for item in CATALOG
        )
        return (
            "<!doctype html><html lang=en><meta charset=utf-8><title>Demo platform</title>"
            f"<h1>Demo creator platform</h1><ul>{links}</ul>"
            '<p><a href="/analytics/">Analytics dashboard</a></p></html>'
        )

    @app.get("/api/content")
    def list_content() -> list[dict[str, Any]]:
        return [item.__dict__ for item in CATALOG]

    @app.get("/api/content/{content_id}")
    def get_content(content_id: str) -> dict[str, Any]:
        item = BY_ID.get(content_id)
        if item is None:
            raise HTTPException(status_code=404, detail="no such content")
        return item.__dict__

    @app.get("/watch/{content_id}", response_class=HTMLResponse)
    def watch(content_id: str) -> str:
        item = BY_ID.get(content_id)
        if item is None:
            raise HTTPException(status_code=404, detail="no such content")
        tag = "audio" if item.content_type == "audio" else "video"
        return (
            f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(item.title)}"
            f"</title><h1>{html.escape(item.title)}</h1><{tag} controls "
            f'data-content-id="{item.content_id}" data-creator-id="{item.creator_id}" '
            f'data-content-type="{item.content_type}"></{tag}></html>'
        )

    @app.post("/api/playback")
    def playback(batch: PlaybackBatch) -> dict[str, Any]:
        """The player's events. Each is validated alone: one bad event never loses the rest."""
        accepted = 0
        rejected = []
        for index, raw in enumerate(batch.events):
            try:
                event = parse_event(raw)
                if not isinstance(event, ContentEvent):
                    raise InvalidEvent(
                        [("type", "player_type", "the player sends content events only")]
                    )
            except InvalidEvent as exc:
                rejected.append(
                    {
                        "index": index,
                        "errors": [{"field": f, "rule": r, "message": m} for f, r, m in exc.errors],
                    }
                )
                continue
            edgemetrics.track(event)
            accepted += 1
        return {"accepted": accepted, "rejected": rejected}

    @app.post("/api/purchase")
    def purchase(body: PurchaseRequest, background: BackgroundTasks) -> dict[str, Any]:
        item = BY_ID.get(body.content_id)
        if item is None:
            raise HTTPException(status_code=404, detail="no such content")
        if item.price_minor == 0:
            raise HTTPException(status_code=409, detail="this item is free")
        receipt = checkout(item, body)
        # The receipt email is a background job: its duration and queue delay are recorded.
        background.add_task(send_receipt, receipt["transaction_id"], time.time())
        return {
            "transaction_id": receipt["transaction_id"],
            "amount_minor": item.price_minor,
            "currency": item.currency,
        }

    app.mount(
        "/analytics",
        create_dashboard(
            store,
            authenticate=lambda request: Principal.owner(),
            titles=lambda ids: {i: BY_ID[i].title for i in ids if i in BY_ID},
            name="Demo analytics",
            # Live traffic every two seconds: keep the figures close behind it.
            cache_ttl=1.0,
        ),
    )
    app.add_middleware(EdgeMetricsMiddleware, service="demo")
    return app
