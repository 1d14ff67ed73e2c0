"""What the PII guard adds to building an event on the host's hot path.

The middleware builds one ``ApiCall`` per request. This builds the same event with the
guarded model and with a copy of it whose text fields carry no guard (the peer, measured in
the same run), and prints both figures and their ratio; then the same for a ``View`` with a
referrer URL (stripped to its host) and for the pseudonymisation step on the exporter
thread.

    .venv/bin/python benchmarks/pii_guard.py
"""

from __future__ import annotations

import timeit
from typing import Annotated, Any

from pydantic import Field

from edgemetrics.events import ApiCall, View
from edgemetrics.privacy import Pseudonymizer

ROUNDS = 20_000


class UnguardedApiCall(ApiCall):
    """The same model with plain text fields: what building cost before the guard."""

    service: Annotated[str, Field(min_length=1, max_length=64)] = "app"
    route: Annotated[str, Field(min_length=1, max_length=200)]
    session_id: Annotated[str, Field(max_length=64)] | None = None
    user_id: Annotated[str, Field(max_length=64)] | None = None


class UnguardedView(View):
    content_id: Annotated[str, Field(max_length=64)]
    creator_id: Annotated[str, Field(max_length=64)] | None = None
    user_id: Annotated[str, Field(max_length=64)] | None = None
    referrer_source: Annotated[str, Field(max_length=2048)] | None = None


API = {
    "service": "api",
    "method": "GET",
    "route": "/v1/videos/{video_id}",
    "status_code": 200,
    "duration_ms": 12.5,
    "response_bytes": 1234,
    "session_id": "s-123",
    "user_id": "u-42",
}
VIEW = {
    "content_id": "v-981",
    "creator_id": "c-17",
    "user_id": "u-42",
    "referrer_source": "https://www.google.com/search?q=creator+videos",
}


def per_call_us(build: Any, data: dict[str, Any]) -> float:
    best = min(timeit.repeat(lambda: build(**data), number=ROUNDS, repeat=5))
    return best / ROUNDS * 1e6


def main() -> None:
    guarded = per_call_us(ApiCall, API)
    peer = per_call_us(UnguardedApiCall, API)
    print(
        f"ApiCall build: guarded {guarded:.2f} us, unguarded {peer:.2f} us, "
        f"ratio {guarded / peer:.2f}x (+{guarded - peer:.2f} us per request)"
    )
    guarded = per_call_us(View, VIEW)
    peer = per_call_us(UnguardedView, VIEW)
    print(
        f"View with referrer URL: guarded {guarded:.2f} us, unguarded {peer:.2f} us, "
        f"ratio {guarded / peer:.2f}x"
    )
    pseudonymizer = Pseudonymizer()
    events = [View(content_id="v1", user_id=f"user-{i % 500}") for i in range(250)]
    pseudonymizer.apply(events)  # warm: every user known
    best = min(timeit.repeat(lambda: pseudonymizer.apply(events), number=50, repeat=5))
    print(
        f"pseudonymise a 250-event batch (exporter thread, known users): "
        f"{best / 50 * 1e6 / 250:.2f} us per event"
    )


if __name__ == "__main__":
    main()
