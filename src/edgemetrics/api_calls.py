"""What the HTTP middlewares share: options, the hot-path record and the api_call builder.

The request path does as little as possible: it appends one tuple to the client's buffer
(:meth:`edgemetrics.client.Client.track_raw`). The exporter thread turns tuples into
:class:`~edgemetrics.events.ApiCall` events, or folds them into per-minute aggregates in
cost mode. The tuples are well-formed by construction, so the events are built without
re-validation.

Meaning of an api_call row, in every mode: the row stands for ``calls`` requests;
``duration_ms`` and ``response_bytes`` are their mean, ``duration_min_ms`` and
``duration_max_ms`` their extremes and ``errors`` how many of them were 5xx. So a count is
``sum(calls * _sample_interval)`` and a total is ``sum(x * calls * _sample_interval)``,
whether a row is one request, a head-sampled request (``calls`` = the sampling interval)
or a cost-mode aggregate.

>>> recorder = ApiCallRecorder(service="api", exclude_paths=["/health", "/static/*"])
>>> recorder.excluded("GET", "/static/app.css"), recorder.excluded("GET", "/v1/items")
(True, False)
>>> event = recorder.build((recorder, "GET", "/v1/items/{id}", 200, 0.0, 0.004, 12, False, 1))
>>> event.route, event.status_code, round(event.duration_ms), event.calls
('/v1/items/{id}', 200, 4, 1)
"""

from __future__ import annotations

import fnmatch
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from itertools import repeat
from math import floor
from operator import add, call, floordiv, mul
from typing import Any

import orjson

from edgemetrics.events import ApiCall, Event, event_id_source, iso_ms, new_event_id, utc_ms

# Every path no route matched (404 scans, bots) shares this label: cardinality stays flat.
UNMATCHED_ROUTE = "(unmatched)"

# Record layout, built by the middlewares (index: field):
# 0 recorder, 1 method, 2 request info (the ASGI scope, the WSGI environ, ...; the
# recorder's ``resolve_route``/``resolve_authenticated`` read it on the exporter thread),
# 3 status code, 4 start (perf_counter s), 5 end (perf_counter s), 6 response bytes,
# 7 authenticated (True/False, or None: ask ``resolve_authenticated``),
# 8 weight (requests this record stands for).
Record = tuple[Any, ...]
RouteResolver = Callable[[Any], str]
AuthResolver = Callable[[Any], bool]


def _route_is_info(info: Any) -> str:
    return info if isinstance(info, str) else UNMATCHED_ROUTE


def _anonymous(info: Any) -> bool:
    return False


_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_METHOD = re.compile(r"^[A-Z]{1,16}$")
# Distinct templates kept per recorder before the cache starts over.
_MAX_TEMPLATES = 4096
# An api_call on the wire is written as head (type, id prefix), id counter, the parts fixed
# per endpoint and status around the time (ApiCallRecorder._template), duration and size.
_SIZE = 'e-3,"response_bytes":'
# "0000" to "9999": the last four digits of an event id's counter (see wire_json).
_DIGITS4 = tuple(f"{n:04d}" for n in range(10_000))
# ".000Z" to ".999Z": the end of a timestamp, by its millisecond (as iso_ms writes it).
_MS_TEXT = tuple(f".{ms:03d}Z" for ms in range(1000))


def _valid_method(method: Any) -> str:
    # A client's made-up verb must not make the event invalid.
    if method in _KNOWN_METHODS or (type(method) is str and _METHOD.match(method)):
        return str(method)
    return "OTHER"


def _duration_ms(start: float, end: float) -> float:
    # Microsecond resolution, as the wire form writes it (whole microseconds, "<us>e-3"):
    # the two forms of an event agree, and the wire carries no clock noise digits.
    duration = end - start
    return int(duration * 1e6 + 0.5) / 1000 if duration > 0.0 else 0.0


def _compile_paths(patterns: Iterable[str]) -> Callable[[str], Any] | None:
    """One regex for all exclusion patterns (globs: ``*`` matches within and across ``/``)."""
    parts = [fnmatch.translate(p) for p in patterns]
    if not parts:
        return None
    return re.compile("|".join(f"(?:{p})" for p in parts)).match


class ApiCallRecorder:
    """The options of one middleware instance and the builder of its api_call events.

    ``sample_rate`` keeps about that fraction of requests (rounded to one in an integer N),
    each stored with ``calls = N`` so totals stay right. ``cost_mode`` pre-aggregates per
    endpoint, status class and minute before export.
    """

    def __init__(
        self,
        *,
        service: str = "app",
        exclude_paths: Iterable[str] = (),
        exclude_methods: Iterable[str] = (),
        sample_rate: float = 1.0,
        cost_mode: bool = False,
        resolve_route: RouteResolver = _route_is_info,
        resolve_authenticated: AuthResolver = _anonymous,
    ) -> None:
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError("sample_rate: must be in (0, 1]")
        if not 1 <= len(service) <= 64:
            raise ValueError("service: must be 1 to 64 characters")
        self.service = service
        self.exclude_paths = tuple(exclude_paths)
        self.exclude_methods = frozenset(m.upper() for m in exclude_methods)
        self._path_excluded = _compile_paths(self.exclude_paths)
        self.sample_interval = max(1, round(1.0 / sample_rate))
        self.cost_mode = cost_mode
        self.resolve_route = resolve_route
        self.resolve_authenticated = resolve_authenticated
        self._random = random.random
        # Cost-mode state: touched by the exporter thread only; the lock guards drain vs build
        # when a flush from another thread forces a drain.
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str, int, int], list[float]] = {}
        # wire_json's templates per (method, route, status, authenticated, weight).
        self._templates: dict[tuple[str, str, int, bool, int], str] = {}
        _recorders.add(self)

    def _after_fork_in_child(self) -> None:
        # The parent ships its own open aggregates; a child starting with a copy of them
        # would ship them twice. Its lock may have been held at the fork: a new one.
        self._lock = threading.Lock()
        self._open = {}

    @property
    def needs_filter(self) -> bool:
        """True when a request must be checked before it is recorded (exclusions, sampling)."""
        return bool(self._path_excluded or self.exclude_methods or self.sample_interval > 1)

    def excluded(self, method: str, path: str) -> bool:
        """Whether a request is left out: excluded method or path, or not in the sample."""
        if method in self.exclude_methods:
            return True
        if self._path_excluded is not None and self._path_excluded(path):
            return True
        return self.sample_interval > 1 and self._random() * self.sample_interval >= 1.0

    # --- exporter thread -------------------------------------------------------------

    def build(self, record: Record) -> Event | None:
        """One api_call event from a record, or None when cost mode folds it in."""
        values = self._values(record)
        if values is None:
            return None
        event = _new(ApiCall)
        _set(event, "__dict__", values)
        _set(event, "__pydantic_fields_set__", set(_FIELDS_SET))
        _set(event, "__pydantic_extra__", None)
        _set(event, "__pydantic_private__", None)
        return event

    def _resolve(self, record: Record) -> tuple[str, bool]:
        # The route and the authenticated flag of a record; host objects we do not
        # understand give the shared label and "anonymous", never a lost call.
        info, authenticated = record[2], record[7]
        if type(info) is str:  # the template itself (as the middlewares usually give)
            route = info or UNMATCHED_ROUTE
        else:
            try:
                route = self.resolve_route(info) or UNMATCHED_ROUTE
            except Exception:
                route = UNMATCHED_ROUTE
        if authenticated is None:
            try:
                authenticated = self.resolve_authenticated(info)
            except Exception:
                authenticated = False
        return route, bool(authenticated)

    def _values(self, record: Record) -> dict[str, Any] | None:
        """The api_call of a record as its model's field values; None in cost mode."""
        _, method, _, status, start, end, size, _, weight = record
        route, authenticated = self._resolve(record)
        method = _valid_method(method)
        duration_ms = _duration_ms(start, end)
        wall = start + _wall_offset(start)
        if self.cost_mode:
            self._fold(wall, method, route, status, duration_ms, size, weight)
            return None
        # Valid by construction (route and method checked above, numbers from the clock
        # and the server), in the model's field order: no validation needed.
        return {
            "type": "api_call",
            "event_id": new_event_id(),
            "timestamp": utc_ms(wall),
            "session_id": None,
            "user_id": None,
            "authenticated": authenticated,
            "service": self.service,
            "method": method,
            "route": route[:200],
            "status_code": status,
            "duration_ms": duration_ms,
            "response_bytes": size,
            "calls": weight,
            "duration_min_ms": duration_ms,
            "duration_max_ms": duration_ms,
            "errors": weight if status >= 500 else 0,
        }

    def wire_json(self, records: list[Record]) -> list[str]:
        """The api_calls of ``records`` as the JSON texts of their wire objects, one each
        (cost mode folds them into aggregates and returns none).

        What :func:`edgemetrics.wire.encode_events` would write for the models, in one
        pass and without them: the fields that repeat (service, method, route, status and
        what follows from them) are rendered once per distinct combination, so a record
        costs one f-string of its id, time, those fields, duration and size.
        Fields at the protocol's defaults stay home (no session or user, ``calls`` 1, no
        errors; the duration bounds default to ``duration_ms``).

        >>> recorder = ApiCallRecorder(service="api")
        >>> record = (recorder, "GET", "/v1/items/{id}", 200, 0.0, 0.0042, 12, False, 1)
        >>> (text,) = recorder.wire_json([record])
        >>> import orjson
        >>> sent = orjson.loads(text)
        >>> sent["route"], sent["duration_ms"], sent["response_bytes"], len(sent["event_id"])
        ('/v1/items/{id}', 4.2, 12, 32)
        >>> '"duration_ms":4200e-3,' in text  # whole microseconds, no float formatting
        True
        """
        if self.cost_mode:
            for record in records:
                self._values(record)
            return []
        out: list[str] = []
        append = out.append
        templates = self._templates
        resolve_route = self.resolve_route
        resolve_authenticated = self.resolve_authenticated
        prefix, step = event_id_source()
        # The batch's ids, drawn from the process's counter in one C-level pass. When
        # they are consecutive within one block of 10**4 (nearly always), each is written
        # as the block's digits and a four-digit text from a table: no int to decimal
        # conversion per record.
        numbers = list(map(call, repeat(step, len(records))))
        head = '{"type":"api_call","event_id":"' + prefix
        count = len(numbers)
        low = numbers[0] % 10_000 if numbers else 0
        if count and numbers[-1] - numbers[0] == count - 1 and low + count <= 10_000:
            head += str(numbers[0] // 10_000)
            ids: Iterable[Any] = map(_DIGITS4.__getitem__, range(low, low + count))
        else:
            ids = numbers
        if count:
            uniform = self._uniform_json(records, head, ids)
            if uniform is not None:
                return uniform
        checked, offset = _offset
        last_ms = -1
        stamp = ""
        first, last = 1.0, 0.0  # the starts seen in last_ms: an empty span
        # The previous record's key and template: a run of requests to one endpoint
        # (the usual batch) compares five fields instead of hashing a key per record.
        last_method: Any = None
        last_route: Any = None
        last_status: Any = None
        last_authenticated: Any = None
        last_weight: Any = None
        fixed = ""
        # One loop, no calls of our own per record: this runs once per request served.
        for (_, method, info, status, start, end, size, authenticated, weight), ident in zip(
            records, ids, strict=True
        ):
            if type(info) is str:  # the template itself (as the middlewares usually give)
                route = info or UNMATCHED_ROUTE
            else:
                try:
                    route = resolve_route(info) or UNMATCHED_ROUTE
                except Exception:  # a host route object we do not understand
                    route = UNMATCHED_ROUTE
            if authenticated is None:
                try:
                    authenticated = bool(resolve_authenticated(info))
                except Exception:
                    authenticated = False
            if (
                route is not last_route
                or status != last_status
                or method != last_method
                or authenticated is not last_authenticated
                or weight != last_weight
            ):
                key = (method, route, status, authenticated, weight)
                fixed = templates.get(key) or self._template(key)
                last_method, last_route, last_status = method, route, status
                last_authenticated, last_weight = authenticated, weight
            if start - checked > 1.0:
                checked, offset = _measure_offset()
                first, last = 1.0, 0.0  # a new offset: the span below no longer holds
            if not first <= start <= last:
                # The millisecond of a start outside the span of starts already seen in
                # ``last_ms``; inside it, it is the same (the conversion is monotonic).
                ms = int((start + offset) * 1000)
                if ms != last_ms:
                    last_ms = ms
                    stamp = iso_ms(ms)
                    first = last = start
                elif start < first:
                    first = start
                else:
                    last = start
            duration = end - start
            # Duration in whole microseconds written as "<us>e-3" milliseconds: a JSON
            # number equal to the model's value, without formatting a float.
            us = int(duration * 1e6 + 0.5) if duration > 0.0 else 0
            append(f'{head}{ident}","timestamp":"{stamp}{fixed}{us}{_SIZE}{size}}}')
        return out

    def _uniform_json(
        self, records: list[Record], head: str, ids: Iterable[Any]
    ) -> list[str] | None:
        """wire_json for a batch whose records share method, template, status,
        authenticated flag and weight (an API's usual batch), or None for any other.

        The same texts, made column by column: the records are transposed, the checks
        and the clock conversion run as C-level scans and maps, a second's text is made
        once per distinct second, and what is left per record is one f-string.
        """
        count = len(records)
        _, methods, infos, statuses, starts, ends, sizes, auths, weights = zip(
            *records, strict=True
        )
        method, route, status = methods[0], infos[0], statuses[0]
        authenticated, weight = auths[0], weights[0]
        # ``count`` matches by identity first: a run of one endpoint is a fast scan.
        if not (
            type(route) is str
            and authenticated is not None
            and infos.count(route) == count
            and methods.count(method) == count
            and statuses.count(status) == count
            and auths.count(authenticated) == count
            and weights.count(weight) == count
        ):
            return None
        key = (method, route or UNMATCHED_ROUTE, status, bool(authenticated), weight)
        fixed = self._templates.get(key) or self._template(key)
        # One offset for the batch: measured again when its newest record is more than
        # a second past the last measurement; older records use it as they are.
        checked, offset = _offset
        if max(starts) - checked > 1.0:
            checked, offset = _measure_offset()
        # Epoch milliseconds, int((start + offset) * 1000), by C-level maps. floor() is
        # int() for the positive values here, and a one-argument builtin: no tuple of
        # arguments per call, as int() (a type) takes.
        ms = list(map(floor, map(mul, map(add, starts, repeat(offset)), repeat(1000))))
        # The second's text once per distinct second (iso_ms's, without ".mmmZ").
        second_text = {s: iso_ms(s * 1000)[:-5] for s in set(map(floordiv, ms, repeat(1000)))}
        # One f-string per record (its fixed parts are locals); the duration in whole
        # microseconds, int(duration * 1e6 + 0.5) (floor: it is positive), 0 when
        # end <= start (as duration <= 0).
        return [
            f'{head}{ident}","timestamp":"{second_text[m // 1000]}{_MS_TEXT[m % 1000]}{fixed}'
            f"{floor((end - start) * 1e6 + 0.5) if end > start else 0}{_SIZE}{size}}}"
            for ident, m, start, end, size in zip(ids, ms, starts, ends, sizes, strict=True)
        ]

    def _template(self, key: tuple[str, str, int, bool, int]) -> str:
        """What follows the time in a wire object up to the duration, fixed by (method,
        route, status, authenticated, weight)."""
        method, route, status, authenticated, weight = key
        values: dict[str, Any] = {"service": self.service, "method": _valid_method(method)}
        values["route"] = route[:200]
        values["status_code"] = status
        if authenticated:
            values["authenticated"] = True
        if weight != 1:
            values["calls"] = weight
        if status >= 500:
            values["errors"] = weight
        # orjson writes the strings exactly as encode_events would.
        text = orjson.dumps(values)[1:-1].decode()
        fixed = '",' + text + ',"duration_ms":'
        if len(self._templates) >= _MAX_TEMPLATES:
            self._templates.clear()  # clients' made-up methods must not grow it for ever
        self._templates[key] = fixed
        return fixed

    def _fold(
        self,
        wall: float,
        method: str,
        route: str,
        status: int,
        duration_ms: float,
        size: int,
        weight: int,
    ) -> None:
        key = (method, route[:200], status // 100 * 100, int(wall // 60))
        with self._lock:
            agg = self._open.get(key)
            if agg is None:
                # calls, sum of duration, min, max, errors, sum of bytes
                self._open[key] = [weight, duration_ms * weight, duration_ms, duration_ms, 0, 0]
                agg = self._open[key]
            else:
                agg[0] += weight
                agg[1] += duration_ms * weight
                agg[2] = min(agg[2], duration_ms)
                agg[3] = max(agg[3], duration_ms)
            if status >= 500:
                agg[4] += weight
            agg[5] += size * weight

    def drain(self, force: bool) -> list[Event]:
        """Aggregates of minutes that are over (all of them when ``force``)."""
        if not self.cost_mode:
            return []
        current = int(time.time() // 60)
        with self._lock:
            done = [k for k in self._open if force or k[3] < current]
            rows = [(k, self._open.pop(k)) for k in done]
        return [
            _api_call(
                datetime.fromtimestamp(minute * 60, tz=UTC),
                self.service,
                method,
                route,
                status_class,
                # The mean of the microsecond-rounded durations; float sums can put it
                # an ulp outside the extremes when they (nearly) agree: keep it inside.
                min(max(total / calls, low), high),
                round(size / calls),
                int(calls),
                low,
                high,
                int(errors),
                False,
            )
            for (method, route, status_class, minute), (
                calls,
                total,
                low,
                high,
                errors,
                size,
            ) in rows
        ]


# pydantic keeps a mutable set per model (model_copy adds to it): each event gets a copy.
_FIELDS_SET = frozenset(
    (
        "type", "event_id", "timestamp", "service", "method", "route", "status_code",
        "duration_ms", "response_bytes", "calls", "duration_min_ms", "duration_max_ms",
        "errors", "authenticated",
    )
)  # fmt: skip
_new = object.__new__
_set = object.__setattr__


def _api_call(
    timestamp: datetime,
    service: str,
    method: str,
    route: str,
    status: int,
    duration_ms: float,
    size: int,
    calls: int,
    low: float,
    high: float,
    errors: int,
    authenticated: bool,
) -> ApiCall:
    """An ApiCall from values valid by construction, without pydantic's validation.

    What ``model_construct`` does, minus its generic per-field default handling, which is
    most of its cost; the exporter builds one of these per request.
    """
    event = _new(ApiCall)
    _set(
        event,
        "__dict__",
        {
            "type": "api_call",
            "event_id": new_event_id(),
            "timestamp": timestamp,
            "session_id": None,
            "user_id": None,
            "authenticated": authenticated,
            "service": service,
            "method": method,
            "route": route,
            "status_code": status,
            "duration_ms": duration_ms,
            "response_bytes": size,
            "calls": calls,
            "duration_min_ms": low,
            "duration_max_ms": high,
            "errors": errors,
        },
    )
    _set(event, "__pydantic_fields_set__", set(_FIELDS_SET))
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event


_recorders: weakref.WeakSet[ApiCallRecorder] = weakref.WeakSet()


def _reset_recorders_after_fork() -> None:
    for recorder in list(_recorders):
        recorder._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_recorders_after_fork)

# perf_counter -> wall clock: one offset, measured again when a record is more than a
# second newer than the last measurement, so clock steps and NTP slewing show up within a
# second, without two clock reads per event. A record older than the measurement (records
# reach the exporter a little after they were taken) uses it as it is: measuring again
# would give the same offset.
_offset: list[float] = [time.perf_counter() - 2.0, 0.0]


def _measure_offset() -> tuple[float, float]:
    perf = time.perf_counter()
    offset = time.time() - perf
    _offset[:] = [perf, offset]  # one store: another thread sees the old pair or the new
    return perf, offset


def _wall_offset(now_perf: float) -> float:
    checked, offset = _offset
    if now_perf - checked > 1.0:
        checked, offset = _measure_offset()
    return offset
