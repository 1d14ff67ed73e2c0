"""OpenTelemetry bridge: a ``SpanExporter`` that turns spans into edgemetrics events.

For apps already instrumented with OpenTelemetry: server spans become api_call events
(method, ``http.route``, status, duration), consumer spans become job events (name,
destination queue, outcome from the span status). Other spans are ignored. The class is
built when first used, so importing this module never needs OpenTelemetry::

    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from edgemetrics.integrations.opentelemetry import EdgeMetricsSpanExporter
    provider.add_span_processor(BatchSpanProcessor(EdgeMetricsSpanExporter()))
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from edgemetrics import track
from edgemetrics.api_calls import UNMATCHED_ROUTE
from edgemetrics.events import ApiCall, Event, Job, JobOutcome
from edgemetrics.optional_deps import require

_METHOD_KEYS = ("http.request.method", "http.method")
_STATUS_KEYS = ("http.response.status_code", "http.status_code")
_QUEUE_KEYS = (
    "messaging.destination.name",
    "messaging.destination",
    "messaging.rabbitmq.routing_key",
)


def _first(attributes: Any, keys: Sequence[str]) -> Any:
    for key in keys:
        value = attributes.get(key)
        if value is not None:
            return value
    return None


def span_to_event(span: Any, service: str | None = None) -> Event | None:
    """The event for one finished span, or None for span kinds that are not bridged."""
    trace = require("opentelemetry.trace", extra="otel", integration="opentelemetry")
    if span.end_time is None or span.start_time is None:
        return None
    attributes = span.attributes or {}
    resource = getattr(span, "resource", None)
    name = service or str((resource.attributes if resource else {}).get("service.name") or "app")
    duration_ms = max(0.0, (span.end_time - span.start_time) / 1e6)
    timestamp = datetime.fromtimestamp(span.start_time / 1e9, tz=UTC)
    failed = span.status is not None and span.status.status_code == trace.StatusCode.ERROR
    if span.kind == trace.SpanKind.SERVER:
        method = str(_first(attributes, _METHOD_KEYS) or "OTHER").upper()
        if not method.isalpha() or len(method) > 16:
            method = "OTHER"
        status = _first(attributes, _STATUS_KEYS)
        status_code = int(status) if status is not None else (500 if failed else 200)
        route = attributes.get("http.route") or UNMATCHED_ROUTE
        return ApiCall(
            timestamp=timestamp,
            service=name[:64],
            method=method,
            route=str(route)[:200],
            status_code=min(max(status_code, 100), 599),
            duration_ms=duration_ms,
            errors=1 if status_code >= 500 else 0,
        )
    if span.kind == trace.SpanKind.CONSUMER:
        queue = _first(attributes, _QUEUE_KEYS) or "default"
        return Job(
            timestamp=timestamp,
            service=name[:64],
            job_name=str(span.name)[:64] or "job",
            queue=str(queue)[:64],
            outcome=JobOutcome.error if failed else JobOutcome.success,
            duration_ms=duration_ms,
        )
    return None


def _build_exporter_class() -> type:
    export = require("opentelemetry.sdk.trace.export", extra="otel", integration="opentelemetry")

    class EdgeMetricsSpanExporter(export.SpanExporter):  # type: ignore[misc,name-defined]
        """Bridges finished spans to edgemetrics events (``service`` overrides service.name)."""

        def __init__(self, service: str | None = None) -> None:
            self.service = service

        def export(self, spans: Sequence[Any]) -> Any:
            for span in spans:
                try:
                    event = span_to_event(span, self.service)
                except Exception:  # one odd span must not lose the others
                    continue
                if event is not None:
                    track(event)
            return export.SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            import edgemetrics

            return edgemetrics.flush(timeout_millis / 1000)

    return EdgeMetricsSpanExporter


_classes: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    if name == "EdgeMetricsSpanExporter":
        if name not in _classes:
            _classes[name] = _build_exporter_class()
        return _classes[name]
    raise AttributeError(name)
