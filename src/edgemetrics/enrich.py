"""Browser-event enrichment: user agent, referrer source, cookieless visitor uniqueness.

The Worker (``worker/src/enrich.ts``) and the local collector (:mod:`edgemetrics.collect`)
apply the same rules; the rule tables are declared once here and exported to
``worker/src/enrich.json`` (``python -m edgemetrics.enrich``; a test fails when stale).

User agents are classified by a compact ordered rule list rather than uap-core's
``regexes.yaml``: that file is ~200 KB and over a thousand patterns, which would dominate the
Worker's bundle and its per-request CPU budget (the goal is 1 ms per 250 events), while the
dashboard only needs device class, browser family and OS with a major version. The rules below
cover the browsers and systems that make up nearly all real traffic; anything else is
``other``/``Other``.

Visitors are counted without cookies, as Plausible does: ``visitor = SHA-256(daily salt |
site | IP | User-Agent)``. The salt is random per UTC day and deleted after 48 hours, so a
hash cannot be linked to the next day's or reversed once the salt is gone. IP and User-Agent
are used only inside the hash and never stored.

In consent mode (the page recorded consent; the tracker keeps a random session id in
``sessionStorage``), sessions are counted by that browser session id instead
(:func:`decide_session`); visitors and unique views still come from the daily hash.

>>> classify_user_agent(
...     "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
...     "Chrome/126.0.0.0 Safari/537.36")[:3]
('desktop', 'Chrome', '126')
>>> referrer_source("https://www.google.com/search?q=x", "https://example.com/watch")
'Google'
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

EXPORT_PATH = Path(__file__).resolve().parents[2] / "worker" / "src" / "enrich.json"

# Case-insensitive; matched against the whole User-Agent. A match (or an empty UA) drops the
# request: crawlers, link previewers, uptime checkers, HTTP libraries and headless browsers.
BOT_PATTERN = (
    r"bot\b|bot/|crawl|spider|slurp|archiver|facebookexternalhit|embedly|preview|"
    r"headless|phantomjs|selenium|puppeteer|playwright|lighthouse|pingdom|uptime|monitor|"
    r"curl/|wget/|python-|httpx|aiohttp|go-http-client|java/|okhttp|node-fetch|axios/|"
    r"libwww|scrapy|postman"
)

# (browser, pattern with one group capturing the major version). First match wins, so the
# browsers that also say "Chrome" or "Safari" come before Chrome and Safari.
BROWSERS: tuple[tuple[str, str], ...] = (
    ("Edge", r"\bEdg(?:e|A|iOS)?/(\d+)"),
    ("Opera", r"\bOPR/(\d+)|\bOPT/(\d+)"),
    ("Samsung Internet", r"\bSamsungBrowser/(\d+)"),
    ("Yandex", r"\bYaBrowser/(\d+)"),
    ("UC Browser", r"\bUCBrowser/(\d+)"),
    ("Vivaldi", r"\bVivaldi/(\d+)"),
    ("Firefox", r"\bFirefox/(\d+)|\bFxiOS/(\d+)"),
    ("Chrome", r"\bChrome/(\d+)|\bCriOS/(\d+)"),
    ("Safari", r"\bVersion/(\d+)[0-9.]* (?:Mobile/\w+ )?Safari/"),
    ("Internet Explorer", r"\bMSIE (\d+)|\bTrident/.*rv:(\d+)"),
)

# (os, pattern capturing the major version, or none). Windows NT numbers map to names below.
OPERATING_SYSTEMS: tuple[tuple[str, str], ...] = (
    ("Windows Phone", r"\bWindows Phone(?: OS)? (\d+)"),
    ("Windows", r"\bWindows NT (\d+\.\d+)"),
    ("iOS", r"\b(?:iPhone|iPad|iPod).*? OS (\d+)_"),
    ("Android", r"\bAndroid (\d+)"),
    ("Chrome OS", r"\bCrOS \w+ (\d+)"),
    ("macOS", r"\bMac OS X (\d+)"),
    ("Linux", r"\bLinux\b|\bX11\b"),
)

WINDOWS_VERSIONS: dict[str, str] = {
    "10.0": "10",
    "6.3": "8",
    "6.2": "8",
    "6.1": "7",
    "6.0": "6",
    "5.1": "5",
}

# (device class, pattern). First match wins; no match is "other".
DEVICE_CLASSES: tuple[tuple[str, str], ...] = (
    ("tv", r"SmartTV|SMART-TV|Tizen.*TV|Web0S|WebOS.*TV|AppleTV|GoogleTV|HbbTV|BRAVIA|CrKey|AFT\w"),
    ("console", r"PlayStation|Xbox|Nintendo"),
    ("tablet", r"iPad|Tablet|Kindle|Silk/|PlayBook|Android(?!.*Mobile)"),
    ("mobile", r"Mobi|iPhone|iPod|Windows Phone|Android.*Mobile|BlackBerry|Opera Mini"),
    ("desktop", r"Windows NT|Macintosh|X11|CrOS|Linux"),
)

# Referrer host (or a parent domain of it) to source label. Search engines match any
# country domain through the "google." style prefixes in REFERRER_PREFIXES.
REFERRER_HOSTS: dict[str, str] = {
    "bing.com": "Bing",
    "duckduckgo.com": "DuckDuckGo",
    "search.yahoo.com": "Yahoo",
    "yahoo.com": "Yahoo",
    "baidu.com": "Baidu",
    "ecosia.org": "Ecosia",
    "search.brave.com": "Brave Search",
    "facebook.com": "Facebook",
    "fb.me": "Facebook",
    "instagram.com": "Instagram",
    "t.co": "X",
    "twitter.com": "X",
    "x.com": "X",
    "linkedin.com": "LinkedIn",
    "lnkd.in": "LinkedIn",
    "reddit.com": "Reddit",
    "youtube.com": "YouTube",
    "youtu.be": "YouTube",
    "tiktok.com": "TikTok",
    "pinterest.com": "Pinterest",
    "news.ycombinator.com": "Hacker News",
    "github.com": "GitHub",
    "mastodon.social": "Mastodon",
    "bsky.app": "Bluesky",
    "threads.net": "Threads",
    "discord.com": "Discord",
    "t.me": "Telegram",
    "whatsapp.com": "WhatsApp",
}
# A host's first label(s) to source label, for engines with a domain per country.
REFERRER_PREFIXES: dict[str, str] = {"google.": "Google", "yandex.": "Yandex"}

SESSION_TIMEOUT_MS = 30 * 60 * 1000
SALT_TTL_S = 48 * 3600
MAX_VIEWED = 1000
LABEL_MAX = 64
# A consent-mode session id as the tracker makes it: 128 random bits in lowercase hex.
BROWSER_SESSION_PATTERN = "^[0-9a-f]{32}$"
# A browser session's state is needed for 30 minutes after its last event; events may be up
# to an hour old when they arrive, hence the margin.
SESSION_STATE_TTL_S = SESSION_TIMEOUT_MS // 1000 + 3600


class UserAgent(NamedTuple):
    """What a User-Agent string is reduced to; the string itself is never kept."""

    device_class: str
    browser: str
    browser_version: str | None
    os: str
    os_version: str | None


_BOT = re.compile(BOT_PATTERN, re.IGNORECASE)
_BROWSERS = tuple((name, re.compile(p)) for name, p in BROWSERS)
_OSES = tuple((name, re.compile(p)) for name, p in OPERATING_SYSTEMS)
_DEVICES = tuple((name, re.compile(p)) for name, p in DEVICE_CLASSES)


def is_bot(user_agent: str) -> bool:
    """True for an empty User-Agent or one naming a crawler, library or headless browser.

    >>> is_bot("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
    True
    >>> is_bot("")
    True
    """
    return not user_agent.strip() or _BOT.search(user_agent) is not None


def _first_group(match: re.Match[str]) -> str | None:
    for group in match.groups():
        if group is not None:
            return group
    return None


def _major(version: str | None) -> str | None:
    if version is None or not version.isdigit() or len(version) > 4:
        return None
    return str(int(version))


def classify_user_agent(user_agent: str) -> UserAgent:
    """Device class, browser and OS (major versions only) from a User-Agent string.

    >>> classify_user_agent("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
    ...     "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1")[:]
    ('mobile', 'Safari', '17', 'iOS', '17')
    """
    browser, browser_version = "Other", None
    for name, pattern in _BROWSERS:
        match = pattern.search(user_agent)
        if match:
            browser, browser_version = name, _major(_first_group(match))
            break
    os_name, os_version = "Other", None
    for name, pattern in _OSES:
        match = pattern.search(user_agent)
        if match:
            os_name = name
            raw = _first_group(match)
            # Windows reports NT kernel numbers: map them to the marketed major version.
            os_version = WINDOWS_VERSIONS.get(raw or "") if name == "Windows" else _major(raw)
            break
    device = "other"
    for name, pattern in _DEVICES:
        if pattern.search(user_agent):
            device = name
            break
    return UserAgent(device, browser, browser_version, os_name, os_version)


def _host(url: str) -> str:
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        return ""
    return host.lower().rstrip(".")


def referrer_source(referrer: str | None, page_url: str | None) -> str:
    """The referrer source label; the referrer's path and query are never kept.

    Rules, in order: a ``utm_source`` (else ``ref``, else ``source``) query parameter on the
    page URL wins, cut to 64 characters; no referrer (or one that is not an http(s) URL) is
    ``Direct``; a referrer on the page's own host is ``Internal``; a known host (or a parent
    domain of it) has its label; any other host is the host without ``www.``.

    >>> referrer_source("", "https://example.com/v/1?utm_source=newsletter")
    'newsletter'
    >>> referrer_source("https://m.facebook.com/story?id=1", "https://example.com/")
    'Facebook'
    >>> referrer_source("https://www.blog.example.org/post?a=1", "https://example.com/")
    'blog.example.org'
    >>> referrer_source(None, "https://example.com/")
    'Direct'
    """
    page = page_url or ""
    if page:
        try:
            params = parse_qs(urlsplit(page).query)
        except ValueError:
            params = {}
        for key in ("utm_source", "ref", "source"):
            value = (params.get(key) or [""])[0].strip()
            if value:
                return value[:LABEL_MAX]
    ref = (referrer or "").strip()
    if not re.match(r"^https?://", ref, re.IGNORECASE):
        return "Direct"
    host = _host(ref)
    if not host:
        return "Direct"
    if page and host == _host(page):
        return "Internal"
    labels = host.split(".")
    for i in range(len(labels) - 1):
        label = REFERRER_HOSTS.get(".".join(labels[i:]))
        if label:
            return label
    bare = host[4:] if host.startswith("www.") else host
    for prefix, label in REFERRER_PREFIXES.items():
        if bare.startswith(prefix):
            return label
    return bare[:LABEL_MAX]


def salt_day(now_ms: int) -> str:
    """The UTC day (``YYYY-MM-DD``) whose salt applies at ``now_ms``.

    >>> salt_day(0)
    '1970-01-01'
    """
    days = now_ms // 86_400_000
    # Civil-from-days (Howard Hinnant's algorithm), so Python and the Worker agree exactly.
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (1 if m <= 2 else 0)
    return f"{y:04d}-{m:02d}-{d:02d}"


def visitor_hash(salt: str, site: str, ip: str, user_agent: str) -> str:
    """The day's pseudonymous visitor id: 32 hex digits of SHA-256 over the joined parts.

    >>> visitor_hash("s", "example.com", "192.0.2.1", "UA")[:12]
    '4c64278142b0'
    """
    data = "|".join((salt, site, ip, user_agent)).encode("utf-8")
    return hashlib.sha256(data).hexdigest()[:32]


def session_id(visitor: str, session_start_ms: int) -> str:
    """A session's id: 16 hex digits of SHA-256 of the visitor and the session's start.

    >>> len(session_id("ab" * 16, 1_700_000_000_000))
    16
    """
    return hashlib.sha256(f"{visitor}|{session_start_ms}".encode()).hexdigest()[:16]


@dataclass
class VisitorState:
    """What is remembered about one visitor hash for the day (never the IP or UA).

    >>> VisitorState.from_json(VisitorState(1, 2, ["c1"]).to_json())
    VisitorState(session_start=1, last_seen=2, viewed=['c1'])
    """

    session_start: int
    last_seen: int
    viewed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"s": self.session_start, "l": self.last_seen, "v": self.viewed}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VisitorState:
        return cls(int(data["s"]), int(data["l"]), [str(v) for v in data.get("v", [])])


@dataclass(frozen=True)
class Uniqueness:
    """The 0/1 decisions and the session id for one event."""

    session_id: str
    unique_view: bool
    new_visitor: bool
    new_session: bool


def decide(
    state: VisitorState | None, visitor: str, event_type: str, content_id: str, now_ms: int
) -> tuple[VisitorState, Uniqueness]:
    """Apply one event to the visitor's state; the rules the Worker applies too.

    A visitor not seen under today's salt is new (``new_visitor`` and ``new_session`` on this
    event). A gap of more than 30 minutes since the visitor's last event starts a new session.
    A ``view`` of a content id not yet viewed by this visitor today is a unique view.

    >>> state, u = decide(None, "v" * 32, "view", "c1", 1_000)
    >>> (u.unique_view, u.new_visitor, u.new_session)
    (True, True, True)
    >>> state, u = decide(state, "v" * 32, "view", "c1", 2_000)
    >>> (u.unique_view, u.new_visitor, u.new_session)
    (False, False, False)
    >>> _, u = decide(state, "v" * 32, "play_start", "c1", 2_000 + 31 * 60_000)
    >>> (u.unique_view, u.new_visitor, u.new_session)
    (False, False, True)
    """
    new_visitor = new_session = False
    if state is None:
        state = VisitorState(session_start=now_ms, last_seen=now_ms)
        new_visitor = new_session = True
    elif now_ms - state.last_seen > SESSION_TIMEOUT_MS:
        state.session_start = now_ms
        new_session = True
    state.last_seen = max(state.last_seen, now_ms)
    unique_view = False
    if event_type == "view" and content_id not in state.viewed:
        unique_view = True
        state.viewed.append(content_id)
        del state.viewed[:-MAX_VIEWED]
    sid = session_id(visitor, state.session_start)
    return state, Uniqueness(sid, unique_view, new_visitor, new_session)


def is_browser_session(value: object) -> bool:
    """Whether ``value`` is a well-formed consent-mode session id (32 lowercase hex digits).

    >>> is_browser_session("0123456789abcdef" * 2), is_browser_session("ada@example.com")
    (True, False)
    """
    return isinstance(value, str) and re.fullmatch(BROWSER_SESSION_PATTERN, value) is not None


def session_key(site: str, browser_session: str) -> str:
    """Where a consent-mode session's state is filed: 32 hex digits of SHA-256(site|id).

    The browser's id itself is never stored, neither as a key nor in a data point.

    >>> len(session_key("app.example.com", "0123456789abcdef" * 2))
    32
    """
    return hashlib.sha256(f"{site}|{browser_session}".encode()).hexdigest()[:32]


@dataclass
class SessionState:
    """What is remembered about one consent-mode browser session: its start and last event.

    >>> SessionState.from_json(SessionState(1, 2).to_json())
    SessionState(session_start=1, last_seen=2)
    """

    session_start: int
    last_seen: int

    def to_json(self) -> dict[str, Any]:
        return {"s": self.session_start, "l": self.last_seen}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionState:
        return cls(int(data["s"]), int(data["l"]))


def decide_session(
    state: SessionState | None, key: str, now_ms: int
) -> tuple[SessionState, str, bool]:
    """Apply one consent-mode event to its browser session: (state, session id, new session).

    The first event of a browser session id starts a session; so does an event more than 30
    minutes after the session's last one (the same timeout as cookieless sessions). The
    stored session id is derived from ``key`` and the start, never the browser's id.

    >>> state, sid, new = decide_session(None, "k" * 32, 1_000)
    >>> new, decide_session(state, "k" * 32, 2_000)[1:] == (sid, False)
    (True, True)
    >>> decide_session(state, "k" * 32, 2_000 + 31 * 60_000)[2]
    True
    """
    new_session = False
    if state is None:
        state = SessionState(session_start=now_ms, last_seen=now_ms)
        new_session = True
    elif now_ms - state.last_seen > SESSION_TIMEOUT_MS:
        state.session_start = now_ms
        new_session = True
    state.last_seen = max(state.last_seen, now_ms)
    return state, session_id(key, state.session_start), new_session


class MemoryVisitorStore:
    """Daily salts, visitor and consent-mode session states in memory, for the local collector.

    The Worker keeps the same things in KV with expiry (salt: 48 h; visitor state: until the
    end of its salt's day; session state: 90 minutes after its last event). Here they live as
    long as the process; salts older than 48 hours, states of past days and idle session
    states are deleted on each access.

    >>> store = MemoryVisitorStore()
    >>> store.salt(0) == store.salt(1000)
    True
    """

    def __init__(self, salts: dict[str, str] | None = None) -> None:
        self._salts: dict[str, tuple[str, int]] = {}
        for day, salt in (salts or {}).items():
            # A given salt counts as made at the start of its day.
            start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
            self._salts[day] = (salt, int(start.timestamp()) * 1000)
        self._states: dict[str, tuple[str, VisitorState]] = {}
        self._sessions: dict[str, SessionState] = {}
        self.lock = threading.Lock()

    def salt(self, now_ms: int) -> str:
        day = salt_day(now_ms)
        for old, (_, created) in list(self._salts.items()):
            if now_ms - created > SALT_TTL_S * 1000:
                del self._salts[old]
        if day not in self._salts:
            self._salts[day] = (secrets.token_hex(32), now_ms)
        return self._salts[day][0]

    def get(self, visitor: str, now_ms: int) -> VisitorState | None:
        day = salt_day(now_ms)
        for key, (state_day, _) in list(self._states.items()):
            if state_day != day:
                del self._states[key]
        entry = self._states.get(visitor)
        return entry[1] if entry else None

    def put(self, visitor: str, state: VisitorState, now_ms: int) -> None:
        self._states[visitor] = (salt_day(now_ms), state)

    def get_session(self, key: str, now_ms: int) -> SessionState | None:
        """A consent-mode session's state; states idle past their TTL are deleted first.

        >>> store = MemoryVisitorStore()
        >>> store.put_session("k", SessionState(0, 0), 0)
        >>> store.get_session("k", 60_000), store.get_session("k", 10**9)
        (SessionState(session_start=0, last_seen=0), None)
        """
        for old, state in list(self._sessions.items()):
            if now_ms - state.last_seen > SESSION_STATE_TTL_S * 1000:
                del self._sessions[old]
        return self._sessions.get(key)

    def put_session(self, key: str, state: SessionState, now_ms: int) -> None:
        """Keep a consent-mode session's state (the Worker keeps it in KV with the same TTL)."""
        self._sessions[key] = state


def export() -> dict[str, Any]:
    """The rule tables as JSON data for the Worker.

    >>> export()["session_timeout_ms"]
    1800000
    """
    return {
        "bot_pattern": BOT_PATTERN,
        "browsers": [list(rule) for rule in BROWSERS],
        "operating_systems": [list(rule) for rule in OPERATING_SYSTEMS],
        "windows_versions": WINDOWS_VERSIONS,
        "device_classes": [list(rule) for rule in DEVICE_CLASSES],
        "referrer_hosts": REFERRER_HOSTS,
        "referrer_prefixes": REFERRER_PREFIXES,
        "session_timeout_ms": SESSION_TIMEOUT_MS,
        "salt_ttl_s": SALT_TTL_S,
        "max_viewed": MAX_VIEWED,
        "browser_session_pattern": BROWSER_SESSION_PATTERN,
        "session_state_ttl_s": SESSION_STATE_TTL_S,
    }


def export_json() -> str:
    """The text of ``worker/src/enrich.json``.

    >>> json.loads(export_json())["referrer_hosts"]["t.co"]
    'X'
    """
    return json.dumps(export(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # python -m edgemetrics.enrich [--check]
    text = export_json()
    if "--check" in sys.argv:
        current = EXPORT_PATH.read_text() if EXPORT_PATH.exists() else ""
        sys.exit(0 if current == text else 1)
    EXPORT_PATH.write_text(text)
    print(f"wrote {EXPORT_PATH}")
