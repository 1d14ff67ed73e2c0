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

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from edgemetrics.currencies import ISO_4217

# Ids: opaque, printable, short enough to fit AE's 96-byte index with room to spare.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,63}$"
Id = Annotated[str, Field(pattern=ID_PATTERN, max_length=64)]
Label = Annotated[str, Field(min_length=1, max_length=64)]
Text = Annotated[str, Field(min_length=1, max_length=200)]
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
        super().__init__("; ".join(f"{field}: {message} [{rule}]" for field, rule, message in errors))

    @classmethod
    def from_validation_error(cls, exc: ValidationError) -> InvalidEvent:
        errors = []
        for err in exc.errors(include_url=False):
            loc = ".".join(str(part) for part in err["loc"]) or "event"
            errors.append((loc, err["type"], err["msg"]))
        return cls(errors)


def new_event_id() -> str:
    """A fresh 32-hex-digit event id; stable across retries once assigned."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """What every event carries: a stable id and the time it happened (UTC)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True)

    family: ClassVar[str]

    # Each concrete model narrows this to a Literal: the discriminator of AnyEvent.
    type: str
    event_id: str = Field(default_factory=new_event_id, pattern=r"^[0-9a-f]{32}$")
    timestamp: datetime = Field(default_factory=utcnow, validate_default=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidEvent.from_validation_error(exc) from None

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
    referrer_source: Label | None = None
    timezone: Annotated[str, Field(pattern=r"^[A-Za-z_+\-/0-9]{1,64}$")] | None = None


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
    route: Annotated[str, Field(min_length=1, max_length=200)]
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
    fingerprint: Annotated[str, Field(min_length=1, max_length=1000)]
    operation: Annotated[str, Field(pattern=r"^[A-Z]{1,16}$")] = "OTHER"
    duration_ms: Millis
    rows: Count = 0
    database: Label = "default"


class Error(PlatformEvent):
    """An unhandled error; ``error_type`` is the exception class, never its message."""

    type: Literal["error"] = "error"
    error_type: Annotated[str, Field(min_length=1, max_length=128)]
    source: Label = "app"
    route: Annotated[str, Field(min_length=1, max_length=200)] | None = None


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
            [("type", "enum", f"unknown event type {kind!r}; expected one of {sorted(EVENT_TYPES)}")]
        )
    if not all(isinstance(key, str) for key in data):
        raise InvalidEvent([("event", "type", "field names must be strings")])
    # The constructor turns pydantic's ValidationError into InvalidEvent.
    return EVENT_TYPES[kind](**data)
