"""User-agent classification, referrer sources and cookieless uniqueness (Python side)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgemetrics.enrich import (
    EXPORT_PATH,
    MemoryVisitorStore,
    classify_user_agent,
    decide,
    export_json,
    is_bot,
    referrer_source,
    salt_day,
    visitor_hash,
)

UAS = [
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.87",
        ("desktop", "Edge", "126", "Windows", "10"),
    ),
    (
        "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko",
        ("desktop", "Internet Explorer", "11", "Windows", "7"),
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36 OPR/111.0.0.0",
        ("desktop", "Opera", "111", "macOS", "10"),
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
        ("mobile", "Samsung Internet", "25", "Android", "14"),
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "CriOS/126.0.6478.54 Mobile/15E148 Safari/604.1",
        ("tablet", "Chrome", "126", "iOS", "16"),
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) FxiOS/127.0 Mobile/15E148 Safari/605.1.15",
        ("mobile", "Firefox", "127", "iOS", "17"),
    ),
    (
        "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36",
        ("tv", "Samsung Internet", "4", "Linux", None),
    ),
    (
        "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko)",
        ("console", "Other", None, "Other", None),
    ),
    (
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36",
        ("desktop", "Chrome", "126", "Chrome OS", None),
    ),
    ("SomethingElse/1.0", ("other", "Other", None, "Other", None)),
]


@pytest.mark.parametrize(("ua", "expected"), UAS, ids=[e[1] + "/" + e[3] for _, e in UAS])
def test_user_agent_classes(ua: str, expected: tuple[str, ...]) -> None:
    assert tuple(classify_user_agent(ua)) == expected


@pytest.mark.parametrize(
    "ua",
    [
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.0)",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/120.0.0.0 Safari/537.36",
        "Wget/1.21",
        "Go-http-client/1.1",
        "   ",
    ],
)
def test_bots(ua: str) -> None:
    assert is_bot(ua)


def test_real_browsers_are_not_bots() -> None:
    assert not any(is_bot(ua) for ua, _ in UAS)


@pytest.mark.parametrize(
    ("referrer", "page", "source"),
    [
        ("https://www.google.co.uk/", "https://a.example/", "Google"),
        ("https://yandex.ru/search/?text=x", "https://a.example/", "Yandex"),
        ("https://l.instagram.com/?u=x", "https://a.example/", "Instagram"),
        ("https://t.co/abc", "https://a.example/", "X"),
        ("https://a.example/other?secret=1", "https://a.example/", "Internal"),
        ("android-app://com.google.android.gm", "https://a.example/", "Direct"),
        ("https://x.com/", "https://a.example/?ref=podcast", "podcast"),
        ("https://x.com/", "https://a.example/?utm_source=" + "n" * 80, "n" * 64),
        ("https://www.some-blog.net/p/1", None, "some-blog.net"),
    ],
)
def test_referrer_sources(referrer: str, page: str | None, source: str) -> None:
    assert referrer_source(referrer, page) == source


def test_salt_day_matches_the_calendar() -> None:
    from datetime import UTC, datetime

    for ms in (0, 951_782_400_000, 1_795_600_000_000, 4_102_444_799_999):
        assert salt_day(ms) == datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def test_salts_are_random_daily_and_deleted_after_48_hours() -> None:
    store = MemoryVisitorStore()
    day = 86_400_000
    first = store.salt(0)
    assert store.salt(day - 1) == first
    second = store.salt(day)
    assert second != first and len(second) == 64
    store.salt(2 * day + 1)
    # The first salt is over 48 h old now and gone: asking for that day makes a new one.
    assert store.salt(0) != first
    assert MemoryVisitorStore().salt(0) != MemoryVisitorStore().salt(0)


def test_visitor_hash_depends_on_every_part_and_hides_them() -> None:
    base = visitor_hash("salt", "a.example", "192.0.2.1", "UA")
    assert len(base) == 32
    assert base not in ("salt", "192.0.2.1")
    for changed in (
        ("salt2", "a.example", "192.0.2.1", "UA"),
        ("salt", "b.example", "192.0.2.1", "UA"),
        ("salt", "a.example", "192.0.2.2", "UA"),
        ("salt", "a.example", "192.0.2.1", "UA2"),
    ):
        assert visitor_hash(*changed) != base


def test_sessions_time_out_after_30_minutes_and_views_are_unique_per_content() -> None:
    v = "f" * 32
    state, u = decide(None, v, "play_start", "c1", 0)
    assert (u.new_visitor, u.new_session, u.unique_view) == (True, True, False)
    first_session = u.session_id
    state, u = decide(state, v, "view", "c1", 30 * 60_000)  # exactly 30 min: same session
    assert (u.new_session, u.unique_view, u.session_id) == (False, True, first_session)
    state, u = decide(state, v, "view", "c1", 61 * 60_000)
    assert (u.new_visitor, u.new_session, u.unique_view) == (False, True, False)
    assert u.session_id != first_session


def test_enrich_json_is_fresh() -> None:
    """worker/src/enrich.json is generated: `python -m edgemetrics.enrich` rewrites it."""
    assert EXPORT_PATH.read_text() == export_json()
    check = subprocess.run([sys.executable, "-m", "edgemetrics.enrich", "--check"], check=False)
    assert check.returncode == 0
