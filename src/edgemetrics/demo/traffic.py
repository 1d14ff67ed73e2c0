"""The demo's traffic generator: realistic sessions driven through the app's real endpoints.

Nothing is written to the store directly: every view goes through the playback endpoint,
every purchase through the decorated checkout, every API call through the middleware. The
generator keeps its own tally of what it sent so the dashboard's numbers can be checked.
"""

from __future__ import annotations

import json
import os
import random
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from edgemetrics.demo.catalog import CATALOG, Item

COUNTRIES = [
    ("US", "New York"),
    ("DE", "Berlin"),
    ("GB", "London"),
    ("FR", "Paris"),
    ("BR", "São Paulo"),
    ("JP", "Tokyo"),
    ("IN", "Mumbai"),
    ("NL", "Amsterdam"),
]
DEVICES = [
    ("desktop", "Chrome", "Windows"),
    ("mobile", "Safari", "iOS"),
    ("mobile", "Chrome", "Android"),
    ("tablet", "Safari", "iPadOS"),
    ("desktop", "Firefox", "Linux"),
    ("tv", "Chrome", "Android"),
]
REFERRERS = ["direct", "google", "youtube.com", "instagram.com", "newsletter", "reddit.com"]
TIMEZONES = {
    "US": "America/New_York",
    "DE": "Europe/Berlin",
    "GB": "Europe/London",
    "FR": "Europe/Paris",
    "BR": "America/Sao_Paulo",
    "JP": "Asia/Tokyo",
    "IN": "Asia/Kolkata",
    "NL": "Europe/Amsterdam",
}

# Longest session (an hour of audio, a pause, a purchase): sessions start this far back.
SESSION_SPAN = 1.5 / 24


@dataclass
class Tally:
    """What the generator sent and the app accepted."""

    sessions: int = 0
    views: int = 0
    watch_time_seconds: float = 0.0
    purchases: int = 0
    revenue_minor: dict[str, int] = field(default_factory=dict)
    api_calls: int = 0


class TrafficGenerator:
    """Drives sessions against ``base_url``; writes its tally to ``tally_path`` as it goes."""

    def __init__(self, base_url: str, tally_path: Path, *, seed: int = 7) -> None:
        self.base_url = base_url
        self.tally_path = tally_path
        self.tally = Tally()
        self.random = random.Random(seed)
        self._stop = threading.Event()
        self._visitors = 0

    def stop(self) -> None:
        self._stop.set()

    def run(self, sessions: int, *, live: bool, history_days: float = 28.5) -> None:
        """Replay ``sessions`` sessions spread over the past days, then (``live``) keep going."""
        now = datetime.now(UTC)
        with httpx.Client(base_url=self.base_url, timeout=10.0) as http:
            for _ in range(sessions):
                if self._stop.is_set():
                    return
                # More traffic lately: a gentle growth curve over the month.
                back = SESSION_SPAN + history_days * (1 - self.random.random() ** 0.7)
                self.session(http, now - timedelta(days=back))
            self.save()
            while live and not self._stop.wait(2.0):
                # Sessions are reported once finished, so none lies in the future.
                self.session(http, datetime.now(UTC) - timedelta(days=SESSION_SPAN))
                self.save()

    def save(self) -> None:
        tmp = self.tally_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.tally), indent=2))
        os.replace(tmp, self.tally_path)

    def _get(self, http: httpx.Client, path: str) -> httpx.Response:
        self.tally.api_calls += 1
        return http.get(path)

    def session(self, http: httpx.Client, start: datetime) -> None:
        rnd = self.random
        item: Item = rnd.choices(CATALOG, weights=[8, 5, 4, 3, 6, 2, 3, 2])[0]
        country, city = rnd.choice(COUNTRIES)
        device, browser, os_name = rnd.choice(DEVICES)
        self._visitors += 1
        user = f"u-{rnd.randrange(400):04d}" if rnd.random() < 0.4 else None
        context = {
            "content_id": item.content_id,
            "content_type": item.content_type,
            "creator_id": item.creator_id,
            "session_id": f"s-{self._visitors:06d}",
            "user_id": user,
            "authenticated": user is not None,
            "country": country,
            "city": city,
            "device_class": device,
            "browser": browser,
            "browser_version": str(rnd.randint(110, 131)),
            "os": os_name,
            "os_version": str(rnd.randint(10, 18)),
            "referrer_source": rnd.choice(REFERRERS),
            "timezone": TIMEZONES[country],
        }
        self._get(http, "/api/content")
        self._get(http, f"/api/content/{item.content_id}")
        if rnd.random() < 0.05:
            self._get(http, f"/api/content/missing-{rnd.randrange(10_000)}")  # a 404
        events = self.playback(item, context, start)
        answer = http.post("/api/playback", json={"events": events})
        self.tally.api_calls += 1
        answer.raise_for_status()
        if answer.json()["accepted"] == len(events):
            self.tally.views += 1
            self.tally.watch_time_seconds += sum(e.get("watch_time", 0.0) for e in events)
        if item.price_minor and rnd.random() < 0.18:
            purchased_at = start + timedelta(seconds=item.duration / 2 + 30)
            receipt = http.post(
                "/api/purchase",
                json={
                    "content_id": item.content_id,
                    "user_id": user,
                    "country": country,
                    "device_class": device,
                    "purchased_at": purchased_at.isoformat(),
                },
            )
            self.tally.api_calls += 1
            if receipt.status_code == 200:
                self.tally.purchases += 1
                cur = item.currency
                self.tally.revenue_minor[cur] = (
                    self.tally.revenue_minor.get(cur, 0) + item.price_minor
                )
        self.tally.sessions += 1

    def playback(
        self, item: Item, context: dict[str, Any], start: datetime
    ) -> list[dict[str, Any]]:
        """One viewer's player events; each carries the media time played since the last."""
        rnd = self.random

        def at(seconds: float) -> str:
            return (start + timedelta(seconds=seconds)).isoformat()

        def watched(clock: float, position: float, seconds: float) -> dict[str, Any]:
            # The player reports media time played since its last report as its own event.
            return {
                "type": "watch_time",
                "timestamp": at(clock),
                **context,
                "position": position,
                "media_duration": item.duration,
                "watch_time": seconds,
            }

        first = {"unique_view": True, "new_visitor": rnd.random() < 0.6, "new_session": True}
        events: list[dict[str, Any]] = [{"type": "view", "timestamp": at(0), **context, **first}]
        if item.content_type == "post" or item.duration == 0:
            return events
        duration = item.duration
        events.append(
            {
                "type": "play_start",
                "timestamp": at(1),
                **context,
                "position": 0.0,
                "media_duration": duration,
            }
        )
        watched_to = (
            duration if rnd.random() < 0.45 else round(rnd.uniform(0.05, 0.95) * duration, 1)
        )
        position = 0.0
        clock = 1.0
        if watched_to > 60 and rnd.random() < 0.5:
            pause_at = round(rnd.uniform(10, watched_to - 10), 1)
            clock += pause_at
            events.append(
                {
                    "type": "pause",
                    "timestamp": at(clock),
                    **context,
                    "position": pause_at,
                    "media_duration": duration,
                }
            )
            events.append(watched(clock, pause_at, pause_at))
            clock += rnd.uniform(5, 120)
            events.append(
                {
                    "type": "resume",
                    "timestamp": at(clock),
                    **context,
                    "position": pause_at,
                    "media_duration": duration,
                }
            )
            position = pause_at
        clock += watched_to - position
        last = "complete" if watched_to >= duration else "abandon"
        events.append(
            {
                "type": last,
                "timestamp": at(clock),
                **context,
                "position": watched_to,
                "media_duration": duration,
            }
        )
        events.append(watched(clock, watched_to, round(watched_to - position, 1)))
        return events
