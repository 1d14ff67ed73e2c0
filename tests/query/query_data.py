"""Random data points for the query tests: AE-shaped rows built straight from the layout,
so values can be as hostile as a blob may hold (the pydantic models would refuse some)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from edgemetrics.layout import DataPoint, columns, dataset_name
from edgemetrics.store import DATASETS, EmbeddedStore

T0 = datetime(2024, 3, 1, tzinfo=UTC)
WINDOW_DAYS = 10
HOSTILE = [
    "",
    "'",
    "''",
    "\\",
    "\\'",
    "a'); DROP TABLE edgemetrics_content; --",
    "x' OR '1'='1",
    "/* c */",
    "-- c",
    "\x00",
    "nul\x00mid",
    "é中文🙂",
    "\n\t",
    '"q"',
    "%_",
    "\\0",
]
CREATORS = ["c1", "c2", "c1'", "c1\\", "C1", "c1 ", *HOSTILE[:6]]
COUNTRIES = ["FR", "DE", "US", "", *HOSTILE]
CONTENT = ["v1", "v2", "v3", *HOSTILE[4:9]]
NUMBERS = [0.0, 0.5, 1.0, 2.25, 3.0, 100.0, 250.5, 1000.0]
SAMPLE = [1, 1, 1, 1, 2, 4, 10, 100]

FAMILY_TYPES = {
    "content": ["view", "play_start", "complete", "abandon", "watch_time"],
    "commerce": ["purchase", "refund"],
    "platform": ["api_call", "job", "queue_delay", "db_query", "error"],
    "pipeline": ["pipeline_health"],
}
ENDPOINTS = ["app GET /a", "app POST /b", "api GET /c/{id}", HOSTILE[5]]
_ids = itertools.count()


def point(family: str, fields: dict[str, Any], ts: datetime, si: int) -> DataPoint:
    cols = columns(family)
    blobs = [""] * 20
    doubles = [0.0] * 20
    index = ""
    for name, value in fields.items():
        if name == "index1":
            index = value
            continue
        c = cols[name]
        if c.startswith("blob"):
            blobs[int(c[4:]) - 1] = value
        else:
            doubles[int(c[6:]) - 1] = float(value)
    if family in ("content", "commerce"):
        index = fields.get("creator_id", "")
    doubles[int(cols["timestamp"][6:]) - 1] = ts.timestamp() * 1000
    return DataPoint(
        dataset=dataset_name(family),
        index1=index,
        blobs=tuple(blobs),
        doubles=tuple(doubles),
        event_id=f"{next(_ids):032x}",
        timestamp=ts,
        sample_interval=si,
    )


@st.composite
def points(draw: st.DrawFn, max_size: int = 60) -> list[DataPoint]:
    n = draw(st.integers(0, max_size))
    out = []
    for _ in range(n):
        family = draw(st.sampled_from(["content", "content", "commerce", "platform", "pipeline"]))
        ts = T0 + timedelta(milliseconds=draw(st.integers(0, WINDOW_DAYS * 86_400_000)))
        si = draw(st.sampled_from(SAMPLE))
        num = lambda: draw(st.sampled_from(NUMBERS))  # noqa: E731
        typ = draw(st.sampled_from(FAMILY_TYPES[family]))
        f: dict[str, Any] = {"type": typ}
        if family in ("content", "commerce"):
            f.update(
                creator_id=draw(st.sampled_from(CREATORS)),
                content_id=draw(st.sampled_from(CONTENT)),
                country=draw(st.sampled_from(COUNTRIES)),
                device_class=draw(st.sampled_from(["desktop", "mobile", ""])),
                authenticated=draw(st.sampled_from([0, 1])),
            )
        if family == "content":
            f.update(
                position=num(),
                watch_time=num(),
                unique_view=draw(st.sampled_from([0, 1])),
                new_visitor=draw(st.sampled_from([0, 1])),
                new_session=draw(st.sampled_from([0, 1])),
            )
        elif family == "commerce":
            f.update(amount_minor=num(), currency=draw(st.sampled_from(["EUR", "USD"])))
        elif family == "platform":
            f.update(
                index1=draw(st.sampled_from(ENDPOINTS)),
                status_code=draw(st.sampled_from([200, 201, 302, 404, 500, 503])),
                duration_ms=num(),
                delay_ms=num(),
                calls=draw(st.sampled_from([1, 1, 3])),
                job_name=draw(st.sampled_from(["encode", "mail", HOSTILE[1]])),
                authenticated=draw(st.sampled_from([0, 1])),
            )
        else:
            f.update(
                source=draw(st.sampled_from(["exporter", "worker"])),
                events_in=num(),
                dropped_buffer_full=num(),
                sample_rate=draw(st.sampled_from([0.5, 1.0])),
            )
        out.append(point(family, f, ts, si))
    return out


def reset(store: EmbeddedStore) -> None:
    """Empty every dataset of a store shared by a module's tests."""
    for table in DATASETS:
        store.execute(f"DELETE FROM {table}")
