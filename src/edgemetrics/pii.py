"""The PII guard: no email, phone number, IP address or query-string URL in a text field.

Every free-text field of the event model runs through one of three checks when the event
is built (so nothing personal is in an event by the time it can leave the process):

* **reject** (ids, labels, ``error_type``, ``timezone``): personal data there is a bug in
  the caller, so the event is refused with :class:`~edgemetrics.events.InvalidEvent`
  naming the field and the rule (``pii_email``, ``pii_phone``, ``pii_ip``, ``pii_url``,
  ``pii_user_agent``).
* **strip route** (``route``): a query string or fragment is cut off, an absolute URL is
  reduced to its path, and each personal value left in the path becomes a placeholder
  (``{email}``, ``{phone}``, ``{ip}``): the request is still counted.
* **strip fingerprint** (``fingerprint``): personal values become ``?`` like any literal.
* **referrer** (``referrer_source``): a URL is reduced to its host (:func:`referrer_source`);
  an address or phone number left over becomes its placeholder.

What counts as personal, and why the rules look as they do:

* email: ``local@domain.tld``. An id such as ``user@tenant`` (no dot-TLD) is left alone.
* IPv4 in dotted quads; IPv6 in any textual form (candidates are checked with
  :mod:`ipaddress`, so clock times such as ``12:30:45`` are not flagged).
* phone: a ``+`` international number (8 to 15 digits, with or without separators) or a
  national number written with separators (``(555) 123-4567``, ``020 7946 0958``). A bare
  run of digits is *not* a phone number here: numeric order ids and hashes are common and
  must not be refused.
* URL: ``scheme://...`` with a query string, in a field that must hold a label.
* User-Agent: ``Mozilla/5.0 (...``, or any ``Product/1.2 (comment`` opening; a raw UA is
  reduced to device class, browser and OS by the collector or Worker, never stored.

>>> check("user_id", "u-42")
'u-42'
>>> check("user_id", "ada@example.com")
Traceback (most recent call last):
...
edgemetrics.pii.PiiFound: user_id: looks like an email address; ... [pii_email]
>>> strip_route("/users/ada@example.com/orders?token=abc")
'/users/{email}/orders'
>>> referrer_source("https://www.google.com/search?q=ada%40example.com")
'google.com'
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from pathlib import Path
from typing import Any, Final

from pydantic_core import PydanticCustomError

# The Worker applies the same rules (worker/src/pii.ts) from this file, which
# ``python -m edgemetrics.pii`` writes; a test fails when it is stale.
EXPORT_PATH = Path(__file__).resolve().parents[2] / "worker" / "src" / "pii.json"

# How each guarded field is treated; the event model's JSON Schema carries it as "x-pii".
MODES: Final = ("reject", "route", "fingerprint", "referrer")

RULES: Final = ("pii_email", "pii_phone", "pii_ip", "pii_url", "pii_user_agent")

_EMAIL = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"(?<![0-9.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\.?[0-9])"
# A candidate only: ipaddress decides. Hex groups joined by at least two colons, maybe
# ending in an embedded IPv4 (::ffff:192.0.2.1).
_IPV6 = (
    r"(?<![0-9A-Za-z:])(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4})?(?![0-9A-Za-z:.])"
)
_PHONE = (
    # +44 20 7946 0958, +14155552671, +1 (415) 555-2671
    r"(?<![\w+])\+[0-9](?:[ ().\-]{0,2}[0-9]){7,14}(?![0-9])"
    # (415) 555-2671, 415-555-2671, 415.555.2671
    r"|(?<![\w(])\(?[0-9]{3}\)?[ .\-][0-9]{3}[ .\-][0-9]{4}(?![0-9])"
    # 020 7946 0958, 06 12 34 56 78 (a leading 0 and at least two separated groups)
    r"|(?<![\w.])0[0-9]{1,4}(?:[ .\-][0-9]{2,4}){2,4}(?![0-9])"
)
_URL = r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s?#]*[?#]\S*"
# A raw User-Agent: a browser's product token, or any "Product/1.2 (comment" opening.
# Everything to the end of the text goes with it (a UA runs to the end of its header).
_USER_AGENT = (
    r"(?:Mozilla|Opera|AppleWebKit|Dalvik)/[0-9].*"
    r"|[A-Za-z][A-Za-z0-9_\-]*/[0-9]+(?:\.[0-9]+)+ \(.*"
)

# One regex per kind, each tried only when the text holds the characters it needs: one
# alternation over all kinds costs ~7 us per route, these pre-checks ~0.5 us (the
# middleware builds an event per request, so this is on the host's hot path).
_EMAIL_RE = re.compile(_EMAIL)
_URL_RE = re.compile(_URL)
_IPV4_RE = re.compile(_IPV4)
_IPV6_RE = re.compile(_IPV6)
_PHONE_RE = re.compile(_PHONE)
_USER_AGENT_RE = re.compile(_USER_AGENT, re.DOTALL)
_DROP_DIGITS = str.maketrans("", "", "0123456789")
_PHONE_MIN_DIGITS = 8

_MESSAGES: Final = {
    "pii_email": "looks like an email address",
    "pii_phone": "looks like a phone number",
    "pii_ip": "looks like an IP address",
    "pii_url": "is a URL with a query string or fragment",
    "pii_user_agent": "looks like a raw User-Agent string",
}
_ADVICE: Final = "personal data must not be stored; pass an opaque id or remove it"
_PLACEHOLDERS: Final = {
    "pii_email": "{email}",
    "pii_phone": "{phone}",
    "pii_ip": "{ip}",
    "pii_url": "{url}",
    "pii_user_agent": "{user_agent}",
}


class PiiFound(ValueError):
    """A value holds personal data; ``rule`` is one of :data:`RULES`."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        # The message names the field and the rule, never the value: it may reach logs.
        super().__init__(f"{field}: {_MESSAGES[rule]}; {_ADVICE} [{rule}]")


def _is_ipv6(text: str) -> bool:
    if text.count(":") < 2 or text.strip(":") == "":
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _matches(value: str) -> list[tuple[int, int, str]]:
    """(start, end, rule) of each personal value in ``value``, in order, not overlapping."""
    found: list[tuple[int, int, str]] = []
    if "@" in value:
        found += [(m.start(), m.end(), "pii_email") for m in _EMAIL_RE.finditer(value)]
    if "://" in value:
        found += [(m.start(), m.end(), "pii_url") for m in _URL_RE.finditer(value)]
    if "." in value:
        found += [(m.start(), m.end(), "pii_ip") for m in _IPV4_RE.finditer(value)]
    if value.count(":") >= 2:
        found += [
            (m.start(), m.end(), "pii_ip") for m in _IPV6_RE.finditer(value) if _is_ipv6(m.group())
        ]
    if "/" in value and ("(" in value or "Mozilla" in value or "Opera" in value):
        found += [(m.start(), m.end(), "pii_user_agent") for m in _USER_AGENT_RE.finditer(value)]
    # Every phone form needs a "+" or two separators: ids and hashes skip the regex.
    if (
        len(value) >= _PHONE_MIN_DIGITS
        and ("+" in value or value.count("-") + value.count(" ") + value.count(".") >= 2)
        and len(value) - len(value.translate(_DROP_DIGITS)) >= _PHONE_MIN_DIGITS
    ):
        found += [(m.start(), m.end(), "pii_phone") for m in _PHONE_RE.finditer(value)]
    if len(found) < 2:
        return found
    # Keep the earliest, then longest, of overlapping matches (an address inside a URL,
    # or an IPv4 inside an IPv6, is one finding).
    found.sort(key=lambda f: (f[0], -f[1], f[2]))
    out = [found[0]]
    for item in found[1:]:
        if item[0] >= out[-1][1]:
            out.append(item)
    return out


def find(value: str) -> str | None:
    """The rule the first personal value in ``value`` breaks, or None.

    >>> find("Chrome"), find("call +44 20 7946 0958"), find("2001:db8::1"), find("12:30:45")
    (None, 'pii_phone', 'pii_ip', None)
    >>> find("order 4155552671"), find("10.0.0.1"), find("v1.2.3")
    (None, 'pii_ip', None)
    >>> find("Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"), find("/api/v2/items/(id)")
    ('pii_user_agent', None)
    """
    found = _matches(value)
    return found[0][2] if found else None


def check(field: str, value: str) -> str:
    """Return ``value`` unchanged, or raise :class:`PiiFound` naming ``field`` and the rule.

    >>> check("city", "Lyon")
    'Lyon'
    """
    rule = find(value)
    if rule is not None:
        raise PiiFound(field, rule)
    return value


def _replace(value: str, placeholder: dict[str, str]) -> str:
    found = _matches(value)
    if not found:
        return value
    out = []
    last = 0
    for start, end, rule in found:
        out.append(value[last:start])
        out.append(placeholder[rule])
        last = end
    out.append(value[last:])
    return "".join(out)


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_QUERY_OR_FRAGMENT = re.compile(r"[?#]")


def _split_url(url: str) -> tuple[str, str] | None:
    """(authority, path) of an absolute URL, or None. Split by hand, not by urllib: the
    Worker does exactly the same in pii.ts, so both sides reduce a URL alike."""
    match = _SCHEME.match(url)
    if match is None:
        return None
    rest = url[match.end() :]
    cut = min((i for i in (rest.find(c) for c in "/?#") if i != -1), default=len(rest))
    return rest[:cut], _QUERY_OR_FRAGMENT.split(rest[cut:], maxsplit=1)[0]


def _host(authority: str) -> str:
    authority = authority.rsplit("@", 1)[-1]
    if authority.startswith("["):
        end = authority.find("]")
        return "" if end == -1 else authority[1:end].lower()
    return authority.split(":", 1)[0].lower()


def strip_route(route: str) -> str:
    """A route without query string, fragment, scheme or host, personal values replaced.

    >>> strip_route("https://api.example.com/v1/items?page=2#top")
    '/v1/items'
    >>> strip_route("/callers/+1 (415) 555-2671")
    '/callers/{phone}'
    >>> strip_route("/users/{user_id}")
    '/users/{user_id}'
    """
    if not route:
        return route  # pydantic reports the empty route (string_too_short)
    parts = _split_url(route)
    if parts is not None:
        route = parts[1] or "/"
    route = _QUERY_OR_FRAGMENT.split(route, maxsplit=1)[0] or "/"
    return _replace(route, _PLACEHOLDERS)


def strip_fingerprint(fingerprint: str) -> str:
    """A statement fingerprint with any personal value turned into a ``?`` literal.

    >>> strip_fingerprint("SELECT * FROM users WHERE email = 'ada@example.com'")
    "SELECT * FROM users WHERE email = '?'"
    """
    return _replace(fingerprint, dict.fromkeys(_PLACEHOLDERS, "?"))


def referrer_source(value: str) -> str:
    """A referrer reduced to where it came from: the host of a URL, ``www.`` dropped.

    Path, query string and fragment are never kept. A value that is not a URL (already
    a source label such as ``Google`` or ``newsletter``) is kept, with personal values
    replaced by placeholders. Issue 5's :mod:`edgemetrics.enrich` maps hosts to source
    names (``Google``, ``Facebook``) for browser events; this guard is the last line for
    every event, whatever sent it.

    >>> referrer_source("https://m.facebook.com/story.php?id=1&email=ada@example.com")
    'm.facebook.com'
    >>> referrer_source("Newsletter")
    'Newsletter'
    >>> referrer_source("http://192.168.1.20:8080/admin")
    '{ip}'
    >>> referrer_source("android-app://com.google.android.gm/")
    'com.google.android.gm'
    """
    text = value
    parts = _split_url("http:" + text if text.startswith("//") else text)
    if parts is not None:
        text = _host(parts[0]).removeprefix("www.") or "(unknown)"
    elif "?" in text or "#" in text:
        text = _QUERY_OR_FRAGMENT.split(text, maxsplit=1)[0] or "(unknown)"
    return _replace(text, _PLACEHOLDERS)


# --- pydantic hooks (used by edgemetrics.events) --------------------------------------


def reject_pii(value: str) -> str:
    """Pydantic after-validator: refuse personal data (error type = the rule)."""
    rule = find(value)
    if rule is not None:
        raise PydanticCustomError(
            rule, "{what}; {advice}", {"what": _MESSAGES[rule], "advice": _ADVICE}
        )
    return value


# The strip hooks run before pydantic's own checks, so a long URL is reduced before its
# length is judged; anything that is not a string is left for pydantic to refuse.


def guard_route(value: object) -> object:
    """Pydantic before-validator for ``route``: see :func:`strip_route`."""
    return strip_route(value) if isinstance(value, str) else value


def guard_fingerprint(value: object) -> object:
    """Pydantic before-validator for ``fingerprint``: see :func:`strip_fingerprint`."""
    return strip_fingerprint(value) if isinstance(value, str) else value


def guard_referrer(value: object) -> object:
    """Pydantic before-validator for ``referrer_source``: see :func:`referrer_source`."""
    return referrer_source(value)[:64] if isinstance(value, str) else value


def export() -> dict[str, Any]:
    """The patterns, pre-checks and placeholders as JSON data for the Worker."""
    return {
        "email": _EMAIL,
        "url": _URL,
        "ipv4": _IPV4,
        "ipv6_candidate": _IPV6,
        "phone": _PHONE,
        "phone_min_digits": _PHONE_MIN_DIGITS,
        "user_agent": _USER_AGENT,
        "messages": _MESSAGES,
        "advice": _ADVICE,
        "placeholders": _PLACEHOLDERS,
        "modes": list(MODES),
    }


def export_json() -> str:
    """:func:`export` as the text of ``worker/src/pii.json``."""
    return json.dumps(export(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # python -m edgemetrics.pii [--check]
    text = export_json()
    if "--check" in sys.argv:
        current = EXPORT_PATH.read_text() if EXPORT_PATH.exists() else ""
        sys.exit(0 if current == text else 1)
    EXPORT_PATH.write_text(text)
    print(f"wrote {EXPORT_PATH}")
