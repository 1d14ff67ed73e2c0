"""The event model: one pydantic model per event type, grouped in families.

Every event carries the common context (time, content, creator, session, pseudonymous
user, audience dimensions). Families map to AE datasets (see :mod:`edgemetrics.layout`).
Validation is strict: a bad field raises :class:`InvalidEvent`, whose message names the
field and the rule it broke.

>>> ev = Purchase(amount_minor=499, currency="EUR", transaction_id="tx-1", creator_id="c1")
>>> ev.family, ev.type
('commerce', 'purchase')
>>> parse_event({"type": "view", "content_id": "v1", "creator_id": "c1"}).type
'view'
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from time import time as _time
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import SchemaValidator

from edgemetrics.currencies import ISO_4217
from edgemetrics.pii import guard_fingerprint, guard_referrer, guard_route, reject_pii

# Ids: opaque, printable, short enough to fit AE's 96-byte index with room to spare.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,63}$"
# Every free-text type carries the PII guard (edgemetrics.pii): ids and labels refuse an
# email, phone number, IP address or query-string URL; routes, statement fingerprints and
# referrers are stripped of them instead, so the request or query is still counted.
# "x-pii" in the JSON Schema tells the Worker (worker/src/validate.ts) the same policy.
NoPii = AfterValidator(reject_pii)
_REJECT: dict[str, Any] = {"x-pii": "reject"}
Id = Annotated[str, Field(pattern=ID_PATTERN, max_length=64, json_schema_extra=_REJECT), NoPii]
Label = Annotated[str, Field(min_length=1, max_length=64, json_schema_extra=_REJECT), NoPii]
Text = Annotated[str, Field(min_length=1, max_length=200, json_schema_extra=_REJECT), NoPii]
# Field before the validator: the length rules keep their string_* names, and a before
# validator still runs first (it wraps everything listed before it).
Route = Annotated[
    str,
    Field(min_length=1, max_length=200, json_schema_extra={"x-pii": "route"}),
    BeforeValidator(guard_route),
]
Fingerprint = Annotated[
    str,
    Field(min_length=1, max_length=1000, json_schema_extra={"x-pii": "fingerprint"}),
    BeforeValidator(guard_fingerprint),
]
Referrer = Annotated[
    str,
    Field(min_length=1, max_length=64, json_schema_extra={"x-pii": "referrer"}),
    BeforeValidator(guard_referrer),
]
Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
Seconds = Annotated[float, Field(ge=0, le=7 * 24 * 3600)]
Millis = Annotated[float, Field(ge=0, le=7 * 24 * 3600 * 1000)]
Count = Annotated[int, Field(ge=0, le=2**53)]


class ContentType(StrEnum):
    video = "video"
    audio = "audio"
    post = "post"


class DeviceClass(StrEnum):
    desktop = "desktop"
    mobile = "mobile"
    tablet = "tablet"
    tv = "tv"
    console = "console"
    other = "other"


class JobOutcome(StrEnum):
    success = "success"
    error = "error"
    retry = "retry"


class InvalidEvent(ValueError):
    """An event failed validation. ``errors`` lists ``(field, rule, message)`` triples.

    >>> try:
    ...     parse_event({"type": "purchase", "amount_minor": -1, "currency": "EUR",
    ...                  "transaction_id": "t"})
    ... except InvalidEvent as exc:
    ...     print(exc.errors[0][:2])
    ('amount_minor', 'greater_than_equal')
    """

    def __init__(self, errors: list[tuple[str, str, str]]):
        self.errors = errors
        super().__init__(
            "; ".join(f"{field}: {message} [{rule}]" for field, rule, message in errors)
        )

    @classmethod
    def from_validation_error(cls, exc: ValidationError) -> InvalidEvent:
        errors = []
        for err in exc.errors(include_url=False):
            loc = ".".join(str(part) for part in err["loc"]) or "event"
            errors.append((loc, err["type"], err["msg"]))
        return cls(errors)


# Event ids: 64 random bits drawn from the OS per process (again in every forked child:
# ids must never repeat across gunicorn workers) followed by a counter written in decimal
# (16 digits from 10**15: still hex digits, and cheaper to write than hex). Unique within
# a process by construction and across processes with overwhelming probability, at a
# third of the cost of reading 128 random bits from the OS for every id.
_id_state: list[Any] = []
_COUNTER_START = 10**15


def _reset_ids() -> None:
    _id_state[:] = [os.urandom(8).hex(), itertools.count(_COUNTER_START).__next__]


_reset_ids()
os.register_at_fork(after_in_child=_reset_ids)


def new_event_id() -> str:
    """A fresh 32-hex-digit event id; stable across retries once assigned.

    >>> a, b = new_event_id(), new_event_id()
    >>> len(a), a != b, a[:16] == b[:16]
    (32, True, True)
    """
    prefix, step = _id_state
    return f"{prefix}{step()}"


def event_id_source() -> tuple[str, Callable[[], int]]:
    """This process's id prefix and counter, for writing ids in bulk:
    ``f"{prefix}{counter()}"`` is the id :func:`new_event_id` would give. Read it again
    for each batch: a forked child gets its own.

    >>> prefix, counter = event_id_source()
    >>> a, b = f"{prefix}{counter()}", f"{prefix}{counter()}"
    >>> len(a), a != b, all(c in "0123456789abcdef" for c in a)
    (32, True, True)
    """
    prefix, step = _id_state
    return prefix, step


# The last second rendered by iso_ms and its text (one tuple: threads see it whole).
_last_second: list[tuple[int, str]] = [(-1, "")]
# ".000Z" to ".999Z": a lookup instead of formatting the milliseconds of each time.
_MS_TEXT = tuple(f".{ms:03d}Z" for ms in range(1000))


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as RFC 3339 UTC text with milliseconds, as the wire carries it.

    >>> iso_ms(1_700_000_000_123)
    '2023-11-14T22:13:20.123Z'
    """
    second, rest = divmod(ms, 1000)
    last = _last_second[0]
    if last[0] != second:
        last = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        _last_second[0] = last
    return last[1] + _MS_TEXT[rest]


# The last millisecond handed out and its datetime: under load many events share one.
_last_ms: list[tuple[int, datetime]] = [(0, datetime.fromtimestamp(0, tz=UTC))]


def utc_ms(wall: float) -> datetime:
    """``wall`` (seconds since the epoch) as an aware UTC datetime, truncated to the
    millisecond as the model keeps it (AE and DuckDB keep milliseconds).

    >>> utc_ms(1_700_000_000.1239)
    datetime.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=datetime.timezone.utc)
    """
    ms = int(wall * 1000)
    last = _last_ms[0]
    if ms != last[0]:
        # ms / 1000 is within a quarter microsecond of the true value, and fromtimestamp
        # rounds to the nearest microsecond: the result is exactly ms * 1000 microseconds.
        last = (ms, datetime.fromtimestamp(ms / 1000, tz=UTC))
        _last_ms[0] = last  # one store: another thread sees the old pair or the new, whole
    return last[1]


def utcnow() -> datetime:
    """Now, as the model keeps it: aware UTC, whole milliseconds (no re-validation needed)."""
    # utc_ms(time.time()), inlined: every event built without a timestamp calls this.
    ms = int(time.time() * 1000)
    last = _last_ms[0]
    if ms != last[0]:
        last = (ms, datetime.fromtimestamp(ms / 1000, tz=UTC))
        _last_ms[0] = last
    return last[1]


# --- building events without pydantic's per-call overhead -----------------------------
#
# pydantic validates a model's every field on each construction (~10 us for a View, most
# of it fields the caller did not pass and callbacks into Python). The fast build below
# gives the same result for the common case: each given value is checked by a validator
# compiled from that field's own core schema (the same pattern, bounds, PII guard and
# field validators pydantic runs), with string results memoised (ids, countries and
# labels repeat, and their checks are pure functions of the value); defaults are filled
# from the schema as pydantic would. Anything it cannot vouch for (an unknown or missing
# field, a value that fails a check) goes to pydantic itself, which raises the usual
# InvalidEvent naming every field and rule. A model whose schema it does not understand
# (model validators, validators that need the other fields) always goes to pydantic.

_set = object.__setattr__
_MISSING: Any = object()
_MEMO_LIMIT = 4096  # distinct strings remembered per field before the memo starts over
FastBuild = Callable[[dict[str, Any]], "dict[str, Any] | None"]
_FAST_BUILDS: dict[type, FastBuild] = {}
# The fields set of fast-built events, one per distinct tuple of given names: events made
# by one call site share one set instead of each holding its own. A set is a container the
# garbage collector tracks, and a buffer of 100,000 events waiting for the exporter made
# every full collection visit 100,000 more of them (about 1 us per event in the producer
# benchmark). Sharing is safe because the models are frozen: pydantic changes a model's
# fields set only on assignment (refused) or on the copy ``model_copy`` makes, which gets a
# set of its own first.
_FIELDS_SETS: dict[tuple[str, ...], set[str]] = {}


def _only_plain_functions(schema: Any) -> bool:
    """True when no validator in ``schema`` needs context (other fields, field names)."""
    if isinstance(schema, dict):
        if schema.get("type") in ("with-info", "definition-ref", "definitions"):
            return False
        return all(_only_plain_functions(value) for value in schema.values())
    if isinstance(schema, list | tuple):
        return all(_only_plain_functions(item) for item in schema)
    return True


def _fast_build(cls: type[BaseModel]) -> FastBuild | None:
    """The fast build of ``cls``'s field values, or None when only pydantic may build it."""
    schema = cls.__pydantic_core_schema__
    if schema.get("type") != "model" or cls.__pydantic_post_init__ is not None:
        return None
    fields_schema = schema["schema"]
    if fields_schema.get("type") != "model-fields" or fields_schema.get("computed_fields"):
        return None
    config = schema.get("config")
    template: dict[str, Any] = {}
    checks: dict[str, Callable[[Any], Any]] = {}
    memos: dict[str, dict[str, Any]] = {}
    factories: list[tuple[str, Callable[[], Any]]] = []
    required: list[str] = []
    for name, field in fields_schema["fields"].items():
        if field.get("type") != "model-field" or field.get("validation_alias"):
            return None
        inner = field["schema"]
        template[name] = _MISSING
        if inner.get("type") == "default":
            if inner.get("validate_default") or inner.get("default_factory_takes_data"):
                return None
            if "default_factory" in inner:
                factories.append((name, inner["default_factory"]))
            else:
                template[name] = inner["default"]
            inner = inner["schema"]
        else:
            required.append(name)
        if not _only_plain_functions(inner):
            return None
        try:
            checks[name] = SchemaValidator(inner, config).validate_python
        except Exception:  # a schema that does not stand alone: leave the model to pydantic
            return None
        memos[name] = {}

    # One lookup per given field: its check and its memo.
    fields = {name: (checks[name], memos[name]) for name in checks}
    needed = frozenset(required)
    # Every event's own defaults (Event.event_id, Event.timestamp) are written inline,
    # before the given values (which replace them): two calls and a loop fewer per event.
    stamped = all(pair in factories for pair in _OWN_FACTORIES)
    if stamped:
        factories = [pair for pair in factories if pair not in _OWN_FACTORIES]

    def build(data: dict[str, Any]) -> dict[str, Any] | None:
        values = template.copy()
        if stamped:
            # new_event_id() and utcnow(), inlined.
            prefix, step = _id_state
            values["event_id"] = f"{prefix}{step()}"
            ms = int(_time() * 1000)
            last = _last_ms[0]
            if ms != last[0]:
                last = (ms, datetime.fromtimestamp(ms / 1000, tz=UTC))
                _last_ms[0] = last
            values["timestamp"] = last[1]
        for name, value in data.items():
            field = fields.get(name)
            if field is None:
                return None  # not a field: pydantic names it (extra_forbidden)
            check, memo = field
            if type(value) is str:
                checked = memo.get(value, _MISSING)
                if checked is _MISSING:
                    try:
                        checked = check(value)
                    except ValidationError:
                        return None
                    if len(memo) >= _MEMO_LIMIT:
                        memo.clear()
                    memo[value] = checked
                values[name] = checked
            else:
                try:
                    values[name] = check(value)
                except ValidationError:
                    return None
        if not data.keys() >= needed:
            return None  # pydantic reports what is missing
        for name, factory in factories:
            if name not in data:
                values[name] = factory()
        return values

    return build


_OWN_FACTORIES = (("event_id", new_event_id), ("timestamp", utcnow))


class Event(BaseModel):
    """What every event carries: a stable id and the time it happened (UTC)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True)

    family: ClassVar[str]

    # Each concrete model narrows this to a Literal: the discriminator of AnyEvent.
    type: str
    event_id: str = Field(default_factory=new_event_id, pattern=r"^[0-9a-f]{32}$")
    # The default is already what _aware_utc returns, so it skips validation.
    timestamp: datetime = Field(default_factory=utcnow)

    def __init__(self, **data: Any) -> None:
        build = _FAST_BUILDS.get(type(self))
        values = build(data) if build is not None else None
        if values is not None:
            _set(self, "__dict__", values)
            # One set per distinct list of given names, shared by the events built with
            # it (see _FIELDS_SETS).
            key = tuple(data)
            given = _FIELDS_SETS.get(key)
            if given is None:
                if len(_FIELDS_SETS) >= _MEMO_LIMIT:
                    _FIELDS_SETS.clear()
                given = _FIELDS_SETS[key] = set(key)
            _set(self, "__pydantic_fields_set__", given)
            _set(self, "__pydantic_extra__", None)
            _set(self, "__pydantic_private__", None)
            return
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidEvent.from_validation_error(exc) from None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        build = _fast_build(cls)
        if build is not None:
            _FAST_BUILDS[cls] = build

    @field_validator("timestamp")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a time zone (naive datetimes are ambiguous)")
        value = value.astimezone(UTC)
        # AE and DuckDB keep milliseconds; truncate so encode/decode is exact.
        return value.replace(microsecond=value.microsecond // 1000 * 1000)


class Visitor(Event):
    """Who acted: a session and a pseudonymous user (a keyed hash or opaque id, never PII)."""

    session_id: Id | None = None
    user_id: Id | None = None
    authenticated: bool = False


class Audience(Visitor):
    """The common context of audience-facing events: what was consumed, by whom, from where."""

    content_id: Id | None = None
    content_type: ContentType | None = None
    creator_id: Id | None = None
    country: Country | None = None
    city: Label | None = None
    device_class: DeviceClass | None = None
    browser: Label | None = None
    browser_version: Annotated[str, Field(pattern=r"^[0-9]{1,4}$")] | None = None
    os: Label | None = None
    os_version: Annotated[str, Field(pattern=r"^[0-9]{1,4}$")] | None = None
    referrer_source: Referrer | None = None
    timezone: (
        Annotated[str, Field(pattern=r"^[A-Za-z_+\-/0-9]{1,64}$", json_schema_extra=_REJECT), NoPii]
        | None
    ) = None


# --- content -------------------------------------------------------------------------


class ContentEvent(Audience):
    family: ClassVar[str] = "content"
    content_id: Id
    position: Seconds = 0.0
    media_duration: Seconds = 0.0
    watch_time: Seconds = 0.0
    # Uniqueness is decided before the write and stored as 0/1 so it sums under sampling.
    unique_view: bool = False
    new_visitor: bool = False
    new_session: bool = False


class View(ContentEvent):
    type: Literal["view"] = "view"


class PlayStart(ContentEvent):
    type: Literal["play_start"] = "play_start"


class Pause(ContentEvent):
    type: Literal["pause"] = "pause"


class Resume(ContentEvent):
    type: Literal["resume"] = "resume"


class Complete(ContentEvent):
    type: Literal["complete"] = "complete"


class Abandon(ContentEvent):
    """The viewer left before the end; ``position`` is where they left."""

    type: Literal["abandon"] = "abandon"


class WatchTime(ContentEvent):
    """Media time actually played since the last report (seconds in ``watch_time``)."""

    type: Literal["watch_time"] = "watch_time"


# --- commerce ------------------------------------------------------------------------


class CommerceEvent(Audience):
    family: ClassVar[str] = "commerce"
    amount_minor: Annotated[int, Field(ge=0, le=10**12)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    transaction_id: Id

    @field_validator("currency")
    @classmethod
    def _iso_4217(cls, value: str) -> str:
        if value not in ISO_4217:
            raise ValueError(f"{value!r} is not an ISO 4217 currency code")
        return value


class Purchase(CommerceEvent):
    type: Literal["purchase"] = "purchase"


class Refund(CommerceEvent):
    type: Literal["refund"] = "refund"
    original_transaction_id: Id | None = None


# --- platform ------------------------------------------------------------------------


class PlatformEvent(Visitor):
    family: ClassVar[str] = "platform"
    service: Label = "app"


class ApiCall(PlatformEvent):
    """One request, or (cost mode) an aggregate of ``calls`` requests in one minute."""

    type: Literal["api_call"] = "api_call"
    method: Annotated[str, Field(pattern=r"^[A-Z]{1,16}$")]
    route: Route
    status_code: Annotated[int, Field(ge=100, le=599)]
    duration_ms: Millis
    response_bytes: Count = 0
    # Cost-mode aggregates; a single request has calls=1 and min=max=duration.
    calls: Annotated[int, Field(ge=1, le=2**53)] = 1
    duration_min_ms: Millis = 0.0
    duration_max_ms: Millis = 0.0
    errors: Count = 0

    @model_validator(mode="before")
    @classmethod
    def _single_request_bounds(cls, data: Any) -> Any:
        # One request: min = max = duration. Aggregates (cost mode) pass all three.
        if isinstance(data, dict) and "duration_ms" in data:
            for bound in ("duration_min_ms", "duration_max_ms"):
                if data.get(bound) is None:
                    data = {**data, bound: data["duration_ms"]}
        return data


class Job(PlatformEvent):
    type: Literal["job"] = "job"
    job_name: Label
    queue: Label = "default"
    outcome: JobOutcome = JobOutcome.success
    duration_ms: Millis
    queue_delay_ms: Millis = 0.0
    retries: Annotated[int, Field(ge=0, le=10_000)] = 0


class QueueDelay(PlatformEvent):
    type: Literal["queue_delay"] = "queue_delay"
    queue: Label
    delay_ms: Millis
    depth: Count = 0


class DbQuery(PlatformEvent):
    """``fingerprint`` is the statement with literals removed: never user data."""

    type: Literal["db_query"] = "db_query"
    fingerprint: Fingerprint
    operation: Annotated[str, Field(pattern=r"^[A-Z]{1,16}$")] = "OTHER"
    duration_ms: Millis
    rows: Count = 0
    database: Label = "default"


class Error(PlatformEvent):
    """An unhandled error; ``error_type`` is the exception class, never its message."""

    type: Literal["error"] = "error"
    error_type: Annotated[
        str, Field(min_length=1, max_length=128, json_schema_extra=_REJECT), NoPii
    ]
    source: Label = "app"
    route: Route | None = None


# --- pipeline ------------------------------------------------------------------------


class PipelineHealth(Event):
    """A periodic snapshot of the analytics pipeline's own health."""

    family: ClassVar[str] = "pipeline"
    type: Literal["pipeline_health"] = "pipeline_health"
    source: Label
    events_in: Count = 0
    events_exported: Count = 0
    dropped_buffer_full: Count = 0
    dropped_spool_full: Count = 0
    dropped_invalid: Count = 0
    dropped_expired: Count = 0
    rejected: Count = 0
    retries: Count = 0
    buffer_depth: Count = 0
    spool_depth: Count = 0
    spool_age_s: Seconds = 0.0
    export_latency_ms: Millis = 0.0
    batches: Count = 0
    batch_size_avg: Annotated[float, Field(ge=0, le=1e9)] = 0.0
    execution_ms: Millis = 0.0
    sample_rate: Annotated[float, Field(ge=0, le=1)] = 1.0


AnyEvent = Annotated[
    View
    | PlayStart
    | Pause
    | Resume
    | Complete
    | Abandon
    | WatchTime
    | Purchase
    | Refund
    | ApiCall
    | Job
    | QueueDelay
    | DbQuery
    | Error
    | PipelineHealth,
    Field(discriminator="type"),
]

EVENT_TYPES: dict[str, type[Event]] = {
    model.model_fields["type"].default: model
    for model in (
        View,
        PlayStart,
        Pause,
        Resume,
        Complete,
        Abandon,
        WatchTime,
        Purchase,
        Refund,
        ApiCall,
        Job,
        QueueDelay,
        DbQuery,
        Error,
        PipelineHealth,
    )
}

FAMILIES: tuple[str, ...] = ("content", "commerce", "platform", "pipeline")


def parse_event(data: Mapping[str, Any]) -> Event:
    """Validate a mapping (e.g. decoded JSON) into its event model.

    Raises :class:`InvalidEvent` naming the field and the rule.

    >>> parse_event({"type": "job", "job_name": "encode", "duration_ms": 12.5}).family
    'platform'
    """
    if not isinstance(data, Mapping):
        raise InvalidEvent([("event", "type", "must be a JSON object")])
    kind = data.get("type")
    if kind not in EVENT_TYPES:
        raise InvalidEvent(
            [
                (
                    "type",
                    "enum",
                    f"unknown event type {kind!r}; expected one of {sorted(EVENT_TYPES)}",
                )
            ]
        )
    if not all(isinstance(key, str) for key in data):
        raise InvalidEvent([("event", "type", "field names must be strings")])
    # The constructor turns pydantic's ValidationError into InvalidEvent.
    return EVENT_TYPES[kind](**data)
