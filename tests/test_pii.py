"""The PII guard: personal data in any free-text field is refused or stripped."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgemetrics.events import (
    ApiCall,
    DbQuery,
    Error,
    InvalidEvent,
    Job,
    Purchase,
    View,
    parse_event,
)
from edgemetrics.pii import find, referrer_source, strip_fingerprint, strip_route

EMAILS = ["ada@example.com", "first.last+tag@mail.example.co.uk"]
PHONES = ["+44 20 7946 0958", "+14155552671", "(415) 555-2671", "415-555-2671", "020 7946 0958"]
IPS = ["203.0.113.7", "10.0.0.1", "2001:db8::7", "fe80::1ff:fe23:4567:890a", "::ffff:192.0.2.1"]
UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "okhttp/4.12.0 (Android 14)",
]

CASES = (
    [(v, "pii_email") for v in EMAILS]
    + [(v, "pii_phone") for v in PHONES]
    + [(v, "pii_ip") for v in IPS]
    + [(v, "pii_user_agent") for v in UAS]
    + [("https://example.com/a?b=c", "pii_url")]
)


@pytest.mark.parametrize(("value", "rule"), CASES)
def test_each_kind_of_personal_data_is_recognised(value: str, rule: str) -> None:
    assert find(value) == rule
    assert find(f"prefix {value} suffix") == rule


@pytest.mark.parametrize(
    "value",
    [
        "Chrome",
        "encode-video",
        "order-4155552671",  # numeric order ids are not phone numbers
        "4155552671",
        "k1-0123456789abcdef0123456789abcdef",  # a pseudonym
        "12:30:45",  # a clock time is not IPv6
        "v1.2.3",
        "/v1/videos/{video_id}",
        "user@tenant",  # an id with @ but no domain
        "SELECT * FROM users WHERE id = ?",
        "2026-11-25",
        "Europe/Paris",
        "ValueError",
    ],
)
def test_ordinary_values_are_not_flagged(value: str) -> None:
    assert find(value) is None


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("user_id", "ada@example.com", "pii_email"),
        ("session_id", "203.0.113.7", "pii_ip"),
        ("creator_id", "415-555-2671", "pii_phone"),
        ("content_id", "2001:db8::7", "pii_ip"),
        ("city", "call (415) 555-2671", "pii_phone"),
        ("browser", "Mozilla/5.0 (X11; Linux x86_64)", "pii_user_agent"),
        ("os", "see https://x.example/?u=1", "pii_url"),
    ],
)
def test_ids_and_labels_refuse_personal_data_naming_field_and_rule(
    field: str, value: str, rule: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        View(**{"content_id": "v1", field: value})
    assert [(f, r) for f, r, _ in caught.value.errors] == [(field, rule)]
    # The message names the field and rule but never repeats the value (it may be logged).
    assert value not in str(caught.value)


def test_the_guard_runs_for_events_parsed_from_json_too() -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event({"type": "job", "job_name": "mail ada@example.com", "duration_ms": 1})
    assert caught.value.errors[0][:2] == ("job_name", "pii_email")
    with pytest.raises(InvalidEvent) as caught:
        Purchase(amount_minor=1, currency="EUR", transaction_id="ada@example.com")
    assert caught.value.errors[0][:2] == ("transaction_id", "pii_email")
    with pytest.raises(InvalidEvent) as caught:
        Error(error_type="ada@example.com")
    assert caught.value.errors[0][:2] == ("error_type", "pii_email")
    with pytest.raises(InvalidEvent) as caught:
        View(content_id="v1", timezone="+14155552671")
    assert caught.value.errors[0][:2] == ("timezone", "pii_phone")


def test_routes_lose_query_strings_and_personal_segments_but_are_counted() -> None:
    event = ApiCall(
        method="GET",
        route="https://api.example.com/users/ada@example.com/calls?from=203.0.113.7#x",
        status_code=404,
        duration_ms=3.0,
    )
    assert event.route == "/users/{email}/calls"
    error = Error(error_type="KeyError", route="/callers/+44 20 7946 0958?x=1")
    assert error.route == "/callers/{phone}"
    # A long query string is cut before the length rule is applied.
    long_query = "/search?q=" + "x" * 500
    assert ApiCall(method="GET", route=long_query, status_code=200, duration_ms=1).route == (
        "/search"
    )


def test_fingerprints_keep_their_shape_without_the_values() -> None:
    query = DbQuery(
        fingerprint="SELECT id FROM users WHERE email = 'ada@example.com' AND ip = '10.0.0.1'",
        duration_ms=1.0,
    )
    assert query.fingerprint == "SELECT id FROM users WHERE email = '?' AND ip = '?'"


def test_referrers_become_their_host() -> None:
    view = View(
        content_id="v1",
        referrer_source="https://www.google.com/search?q=ada%40example.com&client=x" + "y" * 300,
    )
    assert view.referrer_source == "google.com"
    assert referrer_source("mailto:ada@example.com") == "mailto:{email}"
    assert View(content_id="v1", referrer_source="newsletter").referrer_source == "newsletter"


def test_a_refused_event_does_not_touch_other_events() -> None:
    good = Job(job_name="encode", duration_ms=1.0)
    with pytest.raises(InvalidEvent):
        Job(job_name="encode for ada@example.com", duration_ms=1.0)
    assert good.job_name == "encode"


_pii_text = st.one_of(
    st.text(max_size=60),
    st.sampled_from([v for v, _ in CASES]),
    st.lists(
        st.one_of(st.sampled_from([v for v, _ in CASES]), st.text(max_size=8)), max_size=4
    ).map(" / ".join),
)


@given(_pii_text)
def test_stripping_leaves_no_personal_data_and_is_stable(value: str) -> None:
    for strip in (strip_route, strip_fingerprint, referrer_source):
        once = strip(value)
        assert find(once) is None, (strip.__name__, once)
        assert strip(once) == once


def test_malformed_urls_are_reduced_not_crashed_on() -> None:
    assert strip_route("http://[::1/videos?x=1") == "/videos"
    assert strip_route("/login?next=https://evil.example/?u=ada@example.com") == "/login"
    assert referrer_source("http://[2001:db8::7/page") == "(unknown)"


def test_pii_json_for_the_worker_is_fresh() -> None:
    """worker/src/pii.json is generated: `python -m edgemetrics.pii` rewrites it."""
    import subprocess
    import sys

    from edgemetrics.pii import EXPORT_PATH, export_json

    assert EXPORT_PATH.read_text() == export_json()
    check = subprocess.run([sys.executable, "-m", "edgemetrics.pii", "--check"], check=False)
    assert check.returncode == 0
