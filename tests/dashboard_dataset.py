"""A generated platform for the dashboard's tests: three creators, two dozen items, two months
of audience, sales and platform health, written through the real pipeline (client, exporter
thread, store sink) into a DuckDB file. The event list is kept so tests compute the expected
figures on their own, independently of the query engine.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from edgemetrics.client import Client
from edgemetrics.events import (
    Abandon,
    ApiCall,
    Complete,
    DbQuery,
    Event,
    Job,
    PipelineHealth,
    PlayStart,
    Purchase,
    QueueDelay,
    Refund,
    View,
    WatchTime,
)
from edgemetrics.sinks import StoreSink
from edgemetrics.store import EmbeddedStore

CREATORS = {"c-ana": "EUR", "c-ben": "EUR", "c-cho": "USD"}
PLACES = [
    ("US", "New York", "America/New_York"),
    ("US", "Chicago", "America/Chicago"),
    ("DE", "Berlin", "Europe/Berlin"),
    ("FR", "Paris", "Europe/Paris"),
    ("FR", "Lyon", "Europe/Paris"),
    ("GB", "London", "Europe/London"),
    ("BR", "São Paulo", "America/Sao_Paulo"),
    ("JP", "Tokyo", "Asia/Tokyo"),
    ("IN", "Mumbai", "Asia/Kolkata"),
    ("NL", "Amsterdam", "Europe/Amsterdam"),
    ("ES", "Madrid", "Europe/Madrid"),
    ("IT", "Rome", "Europe/Rome"),
    ("CA", "Toronto", "America/Toronto"),
]
DEVICES = [
    ("desktop", "Chrome", "Windows"),
    ("mobile", "Safari", "iOS"),
    ("mobile", "Chrome", "Android"),
    ("tablet", "Safari", "iPadOS"),
    ("desktop", "Firefox", "Linux"),
]
REFERRERS = ["direct", "google", "youtube.com", "newsletter", "reddit.com"]
ENDPOINTS = [("GET", "/api/content"), ("GET", "/api/content/{id}"), ("POST", "/api/purchase")]


@dataclass(frozen=True)
class Item:
    content_id: str
    title: str
    content_type: str
    creator_id: str
    duration: float
    price_minor: int
    currency: str


@dataclass
class Dataset:
    now: datetime
    items: list[Item]
    events: list[Event] = field(default_factory=list)

    @property
    def titles(self) -> dict[str, str]:
        return {i.content_id: i.title for i in self.items}

    def item(self, content_id: str) -> Item:
        return next(i for i in self.items if i.content_id == content_id)

    def count(self, kind: type[Event], keep: Callable[[Event], bool] = lambda e: True) -> int:
        return sum(1 for e in self.events if isinstance(e, kind) and keep(e))


def catalogue() -> list[Item]:
    kinds = ["video", "audio", "post"]
    items = []
    for n, (creator, currency) in enumerate(CREATORS.items()):
        for k in range(8):
            kind = kinds[(k + n) % 3]
            items.append(
                Item(
                    f"{kind[0]}-{creator[2:]}-{k:02d}",
                    f"{creator[2:].title()}'s {kind} number {k + 1}",
                    kind,
                    creator,
                    0.0 if kind == "post" else 300.0 + 60 * k,
                    0 if k % 3 == 2 else 199 + 100 * k,
                    currency,
                )
            )
    return items


def since_midnight(now: datetime) -> float:
    return (now - now.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()


def generate(store: EmbeddedStore, *, sessions: int = 1200, seed: int = 11) -> Dataset:
    """Write the dataset into ``store`` through a real client and return what was sent."""
    rnd = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    items = catalogue()
    data = Dataset(now, items)
    add = data.events.append
    weights = [1 + (len(items) - i) % 7 for i in range(len(items))]
    for s in range(sessions):
        # A quarter of sessions in the last 7 days (a few today), the rest over 60 days.
        if s % 40 == 0:
            back = rnd.uniform(60, max(61.0, since_midnight(now) - 60))
        elif s % 4 == 0:
            back = rnd.uniform(60, 7 * 86400 - 3600)
        else:
            back = rnd.uniform(60, 60 * 86400)
        at = now - timedelta(seconds=back)
        item = rnd.choices(items, weights)[0]
        country, city, tz = rnd.choice(PLACES)
        device, browser, os_name = rnd.choice(DEVICES)
        user = f"u-{rnd.randrange(300):04d}" if rnd.random() < 0.4 else None
        ctx = {
            "content_id": item.content_id,
            "content_type": item.content_type,
            "creator_id": item.creator_id,
            "session_id": f"s-{s:05d}",
            "user_id": user,
            "authenticated": user is not None,
            "country": country,
            "city": city,
            "device_class": device,
            "browser": browser,
            "browser_version": str(rnd.randint(110, 131)),
            "os": os_name,
            "referrer_source": rnd.choice(REFERRERS),
            "timezone": tz,
        }
        add(View(timestamp=at, unique_view=True, new_visitor=rnd.random() < 0.5, **ctx))
        if item.duration:
            add(PlayStart(timestamp=at, media_duration=item.duration, **ctx))
            left = (
                item.duration
                if rnd.random() < 0.4
                else round(rnd.uniform(0.05, 0.95) * item.duration, 1)
            )
            end = at + timedelta(seconds=1)
            last = Complete if left >= item.duration else Abandon
            add(last(timestamp=end, position=left, media_duration=item.duration, **ctx))
            add(WatchTime(timestamp=end, position=left, watch_time=left, **ctx))
        if item.price_minor and rnd.random() < 0.15:
            tx = f"tx-{s:05d}"
            add(
                Purchase(
                    timestamp=at + timedelta(seconds=2),
                    amount_minor=item.price_minor,
                    currency=item.currency,
                    transaction_id=tx,
                    **ctx,
                )
            )
            if rnd.random() < 0.1:
                add(
                    Refund(
                        timestamp=at + timedelta(seconds=3),
                        amount_minor=item.price_minor,
                        currency=item.currency,
                        transaction_id=f"rf-{s:05d}",
                        original_transaction_id=tx,
                        **ctx,
                    )
                )
    for h in range(72):
        hour = now - timedelta(hours=h, minutes=rnd.randint(1, 50))
        for method, route in ENDPOINTS:
            for _ in range(rnd.randint(2, 5)):
                status = 500 if rnd.random() < (0.2 if "purchase" in route else 0.03) else 200
                add(
                    ApiCall(
                        timestamp=hour,
                        service="web",
                        method=method,
                        route=route,
                        status_code=status,
                        duration_ms=round(rnd.uniform(5, 120), 1),
                    )
                )
        add(
            Job(
                timestamp=hour,
                job_name=rnd.choice(["transcode", "send_receipts"]),
                duration_ms=round(rnd.uniform(200, 9000), 1),
                queue_delay_ms=rnd.uniform(0, 500),
            )
        )
        add(
            QueueDelay(
                timestamp=hour,
                queue="default",
                delay_ms=round(rnd.uniform(1, 400), 1),
                depth=rnd.randint(0, 30),
            )
        )
        add(
            DbQuery(
                timestamp=hour,
                fingerprint="SELECT * FROM content WHERE id = ?",
                operation=rnd.choice(["SELECT", "UPDATE"]),
                duration_ms=round(rnd.uniform(0.5, 40), 2),
            )
        )
        add(
            PipelineHealth(
                timestamp=hour,
                source="exporter",
                events_in=1000,
                events_exported=990,
                dropped_buffer_full=rnd.randint(0, 10),
                spool_depth=rnd.randint(0, 50),
                sample_rate=1.0,
            )
        )
    client = Client(StoreSink(store), flush_interval=0.05)
    for event in data.events:
        client.track(event)
    assert client.flush(30), "the exporter did not ship the dataset"
    client.close()
    return data
