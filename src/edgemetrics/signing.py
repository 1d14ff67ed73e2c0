"""HMAC-SHA256 request signing for ``POST /v1/batch`` (see docs/ingest-protocol.md).

The signature covers ``timestamp + "." + body`` where body is the bytes as sent (after
gzip). The receiver compares in constant time and refuses timestamps more than
``WINDOW_S`` seconds from its own clock, so a captured request cannot be replayed later.

>>> headers = sign(b'{"batch_id": "x", "events": []}', "s3cret", timestamp=1700000000)
>>> headers["X-Edgemetrics-Signature"][:3]
'v1='
>>> verify(b'{"batch_id": "x", "events": []}', headers["X-Edgemetrics-Timestamp"],
...        headers["X-Edgemetrics-Signature"], "s3cret", now=1700000100)
>>> verify(b"tampered", headers["X-Edgemetrics-Timestamp"],
...        headers["X-Edgemetrics-Signature"], "s3cret", now=1700000100)
Traceback (most recent call last):
...
edgemetrics.signing.SignatureError: bad_signature: the signature does not match the body
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Edgemetrics-Timestamp"
SIGNATURE_HEADER = "X-Edgemetrics-Signature"
WINDOW_S = 300
_PREFIX = "v1="


class SignatureError(ValueError):
    """A request failed authentication; ``code`` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def signature(body: bytes, secret: str | bytes, timestamp: int) -> str:
    """The header value: ``v1=`` + lowercase hex HMAC-SHA256 over ``timestamp.body``.

    >>> signature(b"{}", "k", 1)[:11]
    'v1=3dd49b25'
    """
    mac = hmac.new(_key(secret), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return _PREFIX + mac.hexdigest()


def sign(body: bytes, secret: str | bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """The two signing headers for ``body``, timestamped now unless ``timestamp`` is given."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: signature(body, secret, ts)}


def verify(
    body: bytes,
    timestamp: str | None,
    signature_value: str | None,
    secret: str | bytes,
    *,
    now: float | None = None,
    window: float = WINDOW_S,
) -> None:
    """Raise :class:`SignatureError` unless the headers authenticate ``body``.

    Codes: ``missing_signature``, ``stale_timestamp``, ``bad_signature``.
    """
    if not timestamp or not signature_value:
        raise SignatureError(
            "missing_signature",
            f"both {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} headers are required",
        )
    try:
        ts = int(timestamp)
    except ValueError:
        raise SignatureError(
            "bad_signature", f"{TIMESTAMP_HEADER} must be Unix seconds, got {timestamp[:32]!r}"
        ) from None
    clock = time.time() if now is None else now
    if abs(clock - ts) > window:
        raise SignatureError(
            "stale_timestamp",
            f"{TIMESTAMP_HEADER} is {clock - ts:+.0f} s from the receiver's clock "
            f"(allowed: within {window:.0f} s)",
        )
    expected = signature(body, secret, ts)
    if not hmac.compare_digest(expected.encode("ascii"), signature_value.strip().encode("utf-8")):
        raise SignatureError("bad_signature", "the signature does not match the body")
