# ruff: noqa: E501  (long lines are SQL text)
"""Synthetic events for the query benchmarks, bulk-loaded into the embedded store with SQL.

Rows are made inside DuckDB from ``range(n)`` and hash-based pseudo-random columns (no
Python objects per row), in the store's own tables (``EmbeddedStore``'s schema, unique
event ids included). The mix: 70% content (views, plays, completions, abandons, watch
time), 2% commerce, 27% platform (API calls, jobs, queue delays, DB queries, errors), 1%
pipeline, spread over the 30 days before ``now``; creators and content are skewed (a few
large creators, a long tail).

Rows arrive in time order, as the collector stores them: each table is written oldest
first, in chunks, with up to a minute of jitter, and 0.3% of rows arrive late (up to two
days after their timestamp, like a replayed spool), so the physical order is the one a real
store has, not a perfect sort.
"""

from __future__ import annotations

from datetime import UTC, datetime

from edgemetrics.layout import columns
from edgemetrics.store import EmbeddedStore

SPAN_MS = 30 * 86_400_000
MIX = {"content": 0.70, "commerce": 0.02, "platform": 0.27, "pipeline": 0.01}
CHUNK = 4_000_000
JITTER_MS = 60_000
LATE_PER_MILLE = 3
LATE_MAX_MS = 2 * 86_400_000


def _h(k: int) -> str:
    """A pseudo-random unsigned 64-bit value per row and per column slot ``k``."""
    return f"hash(i * 1000003 + {k})"


def _pick(values: list[str], k: int) -> str:
    items = ", ".join("'" + v + "'" for v in values)
    return f"list_element([{items}], ({_h(k)} % {len(values)})::INTEGER + 1)"


COUNTRIES = [
    "US",
    "GB",
    "DE",
    "FR",
    "IN",
    "BR",
    "JP",
    "CA",
    "ES",
    "IT",
    "NL",
    "SE",
    "PL",
    "MX",
    "AU",
    "KR",
    "TR",
    "AR",
    "NG",
    "ZA",
]
TIMEZONES = [
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Paris",
    "Asia/Kolkata",
    "America/Sao_Paulo",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Africa/Lagos",
    "Asia/Seoul",
]


def _timestamp(first: int, count: int, now_ms: int) -> str:
    """Row ``i``'s time: its place in the table's time order, jittered, sometimes late."""
    base = f"{now_ms - SPAN_MS} + ((i - {first}) * {SPAN_MS}) // {count}"
    jitter = f"({_h(0)} % {2 * JITTER_MS})::BIGINT - {JITTER_MS}"
    late = f"CASE WHEN {_h(29)} % 1000 < {LATE_PER_MILLE} THEN ({_h(30)} % {LATE_MAX_MS})::BIGINT ELSE 0 END"
    return f"least({now_ms - 1}, greatest({now_ms - SPAN_MS}, {base} + {jitter} - {late}))"


def _insert(
    store: EmbeddedStore, family: str, first: int, count: int, now_ms: int, values: dict[str, str]
) -> None:
    cols = columns(family)
    blobs = {f"blob{i}": "''" for i in range(1, 21)}
    doubles = {f"double{i}": "0.0" for i in range(1, 21)}
    index1 = values.pop("index1")
    for field, expr in values.items():
        target = cols[field]
        (blobs if target.startswith("blob") else doubles)[target] = expr
    doubles[cols["layout_version"]] = "1.0"
    doubles[cols["timestamp"]] = "ts_ms::DOUBLE"
    select = ", ".join(
        [
            "format('{:032x}', i) AS event_id",
            "make_timestamp(ts_ms * 1000) AS timestamp",
            f"{index1} AS index1",
        ]
        + [f"{v} AS {k}" for k, v in blobs.items()]
        + [f"{v} AS {k}" for k, v in doubles.items()]
        + ["1 AS _sample_interval"]
    )
    # One statement per chunk, oldest first: the table's physical order is arrival order.
    for start in range(first, first + count, CHUNK):
        stop = min(start + CHUNK, first + count)
        store.execute(
            f"INSERT INTO edgemetrics_{family} SELECT {select} FROM "
            f"(SELECT i, {_timestamp(first, count, now_ms)} AS ts_ms, "
            f"({_h(1)} % 100)::INTEGER AS r FROM range({start}, {stop}) t(i))"
        )


def generate(store: EmbeddedStore, n: int, now: datetime | None = None) -> dict[str, int]:
    """Insert ``n`` events; returns the row count per family."""
    now_ms = int((now or datetime.now(UTC)).timestamp() * 1000)
    counts = {f: int(n * share) for f, share in MIX.items()}
    counts["content"] += n - sum(counts.values())
    # Skewed creators: squaring a uniform draw puts most events on a few low ids.
    creator = f"'c' || ((({_h(2)} % 1000) * ({_h(2)} % 1000)) // 1000)::VARCHAR"
    item = f"({_h(3)} % 50)"
    content = f"{creator} || '-v' || {item}::VARCHAR"
    audience = {
        "creator_id": creator,
        "content_id": content,
        # A property of the item, as on a real platform (not drawn per event).
        "content_type": f"list_element(['video', 'video', 'audio', 'post'], ({item} % 4)::INTEGER + 1)",
        "session_id": f"'s' || ({_h(5)} % 2000000)::VARCHAR",
        "user_id": f"'u' || ({_h(6)} % 500000)::VARCHAR",
        "country": _pick(COUNTRIES, 7),
        "city": _pick(COUNTRIES, 7) + f" || '-' || ({_h(8)} % 5)::VARCHAR",
        "device_class": _pick(["desktop", "mobile", "mobile", "tablet", "tv"], 9),
        "browser": _pick(["Chrome", "Chrome", "Safari", "Firefox", "Edge"], 10),
        "os": _pick(["Windows", "Android", "iOS", "macOS", "Linux"], 11),
        "referrer_source": _pick(["direct", "google", "twitter", "youtube", "newsletter"], 12),
        "timezone": _pick(TIMEZONES, 31),
        "authenticated": f"({_h(13)} % 3 = 0)::INTEGER::DOUBLE",
    }
    first = 0
    content_type = (
        "CASE WHEN r < 57 THEN 'view' WHEN r < 74 THEN 'play_start' WHEN r < 83 THEN 'complete' "
        "WHEN r < 89 THEN 'abandon' ELSE 'watch_time' END"
    )
    _insert(
        store,
        "content",
        first,
        counts["content"],
        now_ms,
        {
            "index1": creator,
            "type": content_type,
            **audience,
            "position": f"({_h(14)} % 600)::DOUBLE",
            "media_duration": "600.0",
            "watch_time": f"CASE WHEN r >= 89 THEN ({_h(15)} % 60)::DOUBLE ELSE 0.0 END",
            "unique_view": f"CASE WHEN r < 57 AND {_h(16)} % 3 = 0 THEN 1.0 ELSE 0.0 END",
            "new_visitor": f"CASE WHEN r < 57 AND {_h(17)} % 5 = 0 THEN 1.0 ELSE 0.0 END",
            "new_session": f"CASE WHEN r < 57 AND {_h(18)} % 4 = 0 THEN 1.0 ELSE 0.0 END",
        },
    )
    first += counts["content"]
    _insert(
        store,
        "commerce",
        first,
        counts["commerce"],
        now_ms,
        {
            "index1": creator,
            "type": "CASE WHEN r < 95 THEN 'purchase' ELSE 'refund' END",
            **audience,
            "currency": _pick(["USD", "USD", "EUR", "GBP"], 19),
            "transaction_id": "'t' || i::VARCHAR",
            "amount_minor": f"(99 + {_h(20)} % 5000)::DOUBLE",
        },
    )
    first += counts["commerce"]
    method = _pick(["GET", "GET", "GET", "POST", "PUT", "DELETE"], 21)
    route = f"'/v1/r' || ({_h(22)} % 40)::VARCHAR"
    job = _pick(["encode", "thumbnail", "mail", "payout"], 23)
    queue = _pick(["default", "media", "mail", "payments"], 32)
    platform_type = (
        "CASE WHEN r < 78 THEN 'api_call' WHEN r < 85 THEN 'job' WHEN r < 88 THEN 'queue_delay' "
        "WHEN r < 96 THEN 'db_query' ELSE 'error' END"
    )
    _insert(
        store,
        "platform",
        first,
        counts["platform"],
        now_ms,
        {
            "index1": f"CASE WHEN r < 78 THEN 'app ' || {method} || ' ' || {route} "
            f"WHEN r < 85 THEN 'app job ' || {job} WHEN r < 88 THEN 'app queue ' || {queue} "
            "WHEN r < 96 THEN 'app db SELECT default' ELSE 'app error ValueError' END",
            "type": platform_type,
            "service": "'app'",
            "method": f"CASE WHEN r < 78 THEN {method} ELSE '' END",
            "route": f"CASE WHEN r < 78 THEN {route} ELSE '' END",
            "job_name": f"CASE WHEN r >= 78 AND r < 85 THEN {job} ELSE '' END",
            "queue": f"CASE WHEN r >= 78 AND r < 88 THEN {queue} ELSE '' END",
            "operation": "CASE WHEN r >= 88 AND r < 96 THEN 'SELECT' ELSE '' END",
            "error_type": "CASE WHEN r >= 96 THEN 'ValueError' ELSE '' END",
            "status_code": f"CASE WHEN r >= 78 THEN 0.0 WHEN {_h(24)} % 100 < 90 THEN 200.0 "
            f"WHEN {_h(24)} % 100 < 97 THEN 404.0 ELSE 500.0 END",
            "duration_ms": f"CASE WHEN r < 85 OR r >= 88 THEN (({_h(25)} % 4000) * ({_h(25)} % 4000) / 16000.0 + 1.0) ELSE 0.0 END",
            "delay_ms": f"CASE WHEN r >= 85 AND r < 88 THEN ({_h(33)} % 30000)::DOUBLE ELSE 0.0 END",
            "calls": "CASE WHEN r < 78 THEN 1.0 ELSE 0.0 END",
            "authenticated": f"({_h(13)} % 2)::DOUBLE",
        },
    )
    first += counts["platform"]
    _insert(
        store,
        "pipeline",
        first,
        counts["pipeline"],
        now_ms,
        {
            "index1": _pick(["exporter", "collector", "worker"], 26),
            "type": "'pipeline_health'",
            "source": _pick(["exporter", "collector", "worker"], 26),
            "events_in": f"(1000 + {_h(27)} % 1000)::DOUBLE",
            "dropped_buffer_full": f"({_h(28)} % 3)::DOUBLE",
            "sample_rate": "1.0",
            "spool_depth": f"({_h(34)} % 50)::DOUBLE",
        },
    )
    return counts
