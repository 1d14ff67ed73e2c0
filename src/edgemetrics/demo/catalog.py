"""The demo platform's catalogue: a few creators and their videos, audio and posts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    content_id: str
    title: str
    content_type: str
    creator_id: str
    duration: float  # seconds of media; 0 for posts
    price_minor: int  # 0 = free
    currency: str


CATALOG: tuple[Item, ...] = (
    Item("v-sourdough", "Sourdough from scratch", "video", "c-ana", 620.0, 499, "EUR"),
    Item("v-knife-skills", "Knife skills in ten minutes", "video", "c-ana", 540.0, 0, "EUR"),
    Item("a-morning-jazz", "Morning jazz session", "audio", "c-ben", 1800.0, 299, "EUR"),
    Item(
        "a-interview-12", "Interview #12: touring on a budget", "audio", "c-ben", 2400.0, 0, "EUR"
    ),
    Item("v-mountain-film", "Three days on the ridge", "video", "c-cho", 1500.0, 999, "USD"),
    Item("p-gear-list", "My full gear list", "post", "c-cho", 0.0, 199, "USD"),
    Item("v-edit-tutorial", "Editing a short film", "video", "c-cho", 900.0, 0, "USD"),
    Item("a-ambient-rain", "Ambient rain, one hour", "audio", "c-ana", 3600.0, 0, "EUR"),
)

BY_ID = {item.content_id: item for item in CATALOG}
