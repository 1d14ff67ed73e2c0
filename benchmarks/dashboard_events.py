"""Synthetic events for the dashboard benchmark, made inside DuckDB (no Python object per row).

Every field a dashboard card reads is filled: audience context (country, city, time zone,
device, browser, OS, referrer, signed in or not), playback (views, plays, completions,
abandons with positions, watch time), purchases and refunds, API calls, jobs, queue delays,
database queries and pipeline snapshots (drops, sample rate, spool depth). Rows spread over
the 60 days before ``now``; creators follow a long tail (a few large, many small).

Each column is a function of the row number through DuckDB's ``hash``, so a run is
reproducible, and rows go straight into the store's tables with their layout positions, in
time order, as a live store receives them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from edgemetrics.layout import columns
from edgemetrics.store import EmbeddedStore

DAYS = 60
SHARES = {"content": 0.72, "commerce": 0.02, "platform": 0.25, "pipeline": 0.01}
PLACES = [
    ("US", "New York", "America/New_York"),
    ("US", "Los Angeles", "America/Los_Angeles"),
    ("GB", "London", "Europe/London"),
    ("DE", "Berlin", "Europe/Berlin"),
    ("FR", "Paris", "Europe/Paris"),
    ("BR", "São Paulo", "America/Sao_Paulo"),
    ("IN", "Mumbai", "Asia/Kolkata"),
    ("JP", "Tokyo", "Asia/Tokyo"),
    ("CA", "Toronto", "America/Toronto"),
    ("ES", "Madrid", "Europe/Madrid"),
    ("IT", "Rome", "Europe/Rome"),
    ("NL", "Amsterdam", "Europe/Amsterdam"),
    ("MX", "Mexico City", "America/Mexico_City"),
    ("AU", "Sydney", "Australia/Sydney"),
    ("KR", "Seoul", "Asia/Seoul"),
]


def rnd(slot: int) -> str:
    """A pseudo-random 64-bit number per row ``i`` and per ``slot``."""
    return f"hash(i, {slot})"


def choose(values: list[str], slot: int) -> str:
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"[{quoted}][1 + ({rnd(slot)} % {len(values)})::INTEGER]"


def _load(
    store: EmbeddedStore, family: str, start: int, count: int, now_ms: int, fields: dict[str, str]
) -> None:
    layout = columns(family)
    values = {f"blob{k}": "''" for k in range(1, 21)} | {f"double{k}": "0.0" for k in range(1, 21)}
    index1 = fields.pop("index1")
    for name, expr in fields.items():
        values[layout[name]] = expr
    values[layout["layout_version"]] = "1.0"
    values[layout["timestamp"]] = "ms::DOUBLE"
    select = ", ".join(
        ["lpad(to_hex(i), 32, '0')", "make_timestamp(ms * 1000)", index1]
        + [values[f"blob{k}"] for k in range(1, 21)]
        + [values[f"double{k}"] for k in range(1, 21)]
        + ["1"]
    )
    span = DAYS * 86_400_000
    store.execute(
        f"INSERT INTO edgemetrics_{family} SELECT {select} FROM ("
        f"SELECT i, {now_ms} - ({rnd(0)} % {span})::BIGINT AS ms, ({rnd(1)} % 100)::INTEGER AS p "
        f"FROM range({start}, {start + count}) r(i)) ORDER BY ms"
    )


def generate(store: EmbeddedStore, n: int, now: datetime | None = None) -> dict[str, int]:
    """Insert ``n`` events into ``store``; returns how many went to each family."""
    now_ms = int((now or datetime.now(UTC)).timestamp() * 1000) - 60_000
    counts = {family: int(n * share) for family, share in SHARES.items()}
    counts["content"] += n - sum(counts.values())
    # Long tail: the product of two uniform draws favours low creator numbers.
    creator = f"'cr' || (({rnd(2)} % 400) * ({rnd(3)} % 400) // 400)::VARCHAR"
    place = f"(1 + ({rnd(4)} % {len(PLACES)})::INTEGER)"
    country = "[" + ", ".join(f"'{c}'" for c, _, _ in PLACES) + f"][{place}]"
    city = "[" + ", ".join(f"'{c}'" for _, c, _ in PLACES) + f"][{place}]"
    zone = "[" + ", ".join(f"'{z}'" for _, _, z in PLACES) + f"][{place}]"
    kind = choose(["video", "video", "audio", "post"], 5)
    audience = {
        "creator_id": creator,
        "content_id": f"{creator} || '-' || {kind} || '-' || ({rnd(6)} % 40)::VARCHAR",
        "content_type": kind,
        "session_id": f"'s' || ({rnd(7)} % 3000000)::VARCHAR",
        "user_id": f"CASE WHEN {rnd(8)} % 5 < 2 THEN 'u' || ({rnd(9)} % 400000)::VARCHAR "
        "ELSE '' END",
        "authenticated": f"CASE WHEN {rnd(8)} % 5 < 2 THEN 1.0 ELSE 0.0 END",
        "country": country,
        "city": city,
        "timezone": zone,
        "device_class": choose(["mobile", "mobile", "desktop", "desktop", "tablet", "tv"], 10),
        "browser": choose(["Chrome", "Chrome", "Safari", "Firefox", "Edge"], 11),
        "os": choose(["Android", "iOS", "Windows", "macOS", "Linux"], 12),
        "referrer_source": choose(["direct", "google", "youtube.com", "newsletter", "x.com"], 13),
    }
    start = 0
    _load(
        store,
        "content",
        start,
        counts["content"],
        now_ms,
        {
            "index1": creator,
            "type": "CASE WHEN p < 50 THEN 'view' WHEN p < 68 THEN 'play_start' "
            "WHEN p < 78 THEN 'complete' WHEN p < 86 THEN 'abandon' ELSE 'watch_time' END",
            **audience,
            "position": f"({rnd(14)} % 900)::DOUBLE",
            "media_duration": "900.0",
            "watch_time": f"CASE WHEN p >= 86 THEN ({rnd(15)} % 300)::DOUBLE ELSE 0.0 END",
            "unique_view": f"CASE WHEN p < 50 AND {rnd(16)} % 3 > 0 THEN 1.0 ELSE 0.0 END",
            "new_visitor": f"CASE WHEN p < 50 AND {rnd(17)} % 4 = 0 THEN 1.0 ELSE 0.0 END",
            "new_session": f"CASE WHEN p < 50 AND {rnd(18)} % 3 = 0 THEN 1.0 ELSE 0.0 END",
        },
    )
    start += counts["content"]
    _load(
        store,
        "commerce",
        start,
        counts["commerce"],
        now_ms,
        {
            "index1": creator,
            "type": "CASE WHEN p < 96 THEN 'purchase' ELSE 'refund' END",
            **audience,
            "currency": choose(["USD", "USD", "EUR", "GBP"], 19),
            "transaction_id": "'tx' || i::VARCHAR",
            "amount_minor": f"(99 + 100 * ({rnd(20)} % 30))::DOUBLE",
        },
    )
    start += counts["commerce"]
    route = f"'/api/r' || ({rnd(21)} % 30)::VARCHAR"
    method = choose(["GET", "GET", "GET", "POST", "PUT"], 22)
    job = choose(["transcode", "thumbnail", "receipt", "payout"], 23)
    queue = choose(["default", "media"], 24)
    _load(
        store,
        "platform",
        start,
        counts["platform"],
        now_ms,
        {
            "index1": f"CASE WHEN p < 80 THEN 'web ' || {method} || ' ' || {route} "
            f"WHEN p < 86 THEN 'web job ' || {job} WHEN p < 90 THEN 'web queue ' || {queue} "
            "ELSE 'web db SELECT' END",
            "type": "CASE WHEN p < 80 THEN 'api_call' WHEN p < 86 THEN 'job' "
            "WHEN p < 90 THEN 'queue_delay' ELSE 'db_query' END",
            "service": "'web'",
            "method": f"CASE WHEN p < 80 THEN {method} ELSE '' END",
            "route": f"CASE WHEN p < 80 THEN {route} ELSE '' END",
            "job_name": f"CASE WHEN p >= 80 AND p < 86 THEN {job} ELSE '' END",
            "queue": f"CASE WHEN p >= 80 AND p < 90 THEN {queue} ELSE '' END",
            "operation": f"CASE WHEN p >= 90 THEN {choose(['SELECT', 'UPDATE', 'INSERT'], 25)} "
            "ELSE '' END",
            "status_code": f"CASE WHEN p >= 80 THEN 0.0 WHEN {rnd(26)} % 100 < 95 THEN 200.0 "
            f"WHEN {rnd(26)} % 100 < 98 THEN 404.0 ELSE 500.0 END",
            "calls": "CASE WHEN p < 80 THEN 1.0 ELSE 0.0 END",
            "duration_ms": f"(1.0 + ({rnd(27)} % 300) * ({rnd(28)} % 300) / 200.0)",
            "delay_ms": f"CASE WHEN p >= 86 AND p < 90 THEN ({rnd(29)} % 2000)::DOUBLE "
            "ELSE 0.0 END",
        },
    )
    start += counts["platform"]
    source = choose(["exporter", "collector", "worker"], 30)
    _load(
        store,
        "pipeline",
        start,
        counts["pipeline"],
        now_ms,
        {
            "index1": source,
            "type": "'pipeline_health'",
            "source": source,
            "events_in": f"(500 + {rnd(31)} % 1000)::DOUBLE",
            "dropped_buffer_full": f"({rnd(32)} % 4)::DOUBLE",
            "spool_depth": f"({rnd(33)} % 100)::DOUBLE",
            "sample_rate": "1.0",
        },
    )
    return counts
