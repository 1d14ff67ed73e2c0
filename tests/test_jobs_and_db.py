"""Celery (a real worker thread on an in-memory broker), SQLAlchemy and the OpenTelemetry bridge."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Captured

from edgemetrics.events import ApiCall, DbQuery, Job


@pytest.fixture(scope="module")
def celery_app() -> Iterator[Any]:
    from celery import Celery
    from celery.contrib.testing.worker import start_worker
    from edgemetrics.integrations import celery as em_celery

    em_celery.setup(service="worker")
    app = Celery("em_test", broker="memory://", backend="cache+memory://")
    app.conf.update(task_default_queue="media", broker_connection_retry_on_startup=False)
    attempts: dict[str, int] = {}

    @app.task(name="encode")
    def encode(video_id: str) -> str:
        return video_id.upper()

    @app.task(name="broken")
    def broken() -> None:
        raise ValueError("bad input")

    @app.task(name="flaky", bind=True, max_retries=2)
    def flaky(self: Any) -> str:
        attempts["flaky"] = attempts.get("flaky", 0) + 1
        if attempts["flaky"] == 1:
            raise self.retry(countdown=0)
        return "ok"

    with start_worker(app, perform_ping_check=False, loglevel="ERROR"):
        yield app


def test_celery_tasks_become_job_events(celery_app: Any, captured: Captured) -> None:
    assert celery_app.tasks["encode"].apply_async(("v1",), countdown=0.5).get(timeout=20) == "V1"
    with pytest.raises(ValueError, match="bad input"):
        celery_app.tasks["broken"].delay().get(timeout=20)
    assert celery_app.tasks["flaky"].delay().get(timeout=20) == "ok"

    jobs = [e for e in captured.events() if isinstance(e, Job)]
    by_name: dict[str, list[Job]] = {}
    for job in jobs:
        by_name.setdefault(job.job_name, []).append(job)
    (encode,) = by_name["encode"]
    assert (encode.outcome, encode.queue, encode.service) == ("success", "media", "worker")
    assert encode.queue_delay_ms >= 450  # published with a 0.5 s countdown
    (broken,) = by_name["broken"]
    assert broken.outcome == "error"
    flaky = sorted(by_name["flaky"], key=lambda j: j.retries)
    assert [(j.outcome, j.retries) for j in flaky] == [("retry", 0), ("success", 1)]


def test_sqlalchemy_statements_are_fingerprinted(tmp_path: Path, captured: Captured) -> None:
    from edgemetrics.integrations.sqlalchemy import instrument
    from sqlalchemy import create_engine, text

    engine = instrument(create_engine(f"sqlite:///{tmp_path / 'shop.db'}"))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)"))
        conn.execute(
            text("INSERT INTO users (email) VALUES (:e)"),
            [{"e": "ada@example.org"}, {"e": "bob@example.org"}],
        )
        conn.execute(text("INSERT INTO users (email) VALUES ('carol@example.org')"))
        rows = conn.execute(
            text("SELECT id FROM users WHERE email = 'ada@example.org' OR id IN (2, 3)")
        ).all()
    assert len(rows) == 3
    with pytest.raises(Exception, match="no such table"), engine.connect() as conn:
        conn.execute(text("SELECT * FROM missing"))

    queries = [e for e in captured.events() if isinstance(e, DbQuery)]
    prints = [(q.operation, q.fingerprint) for q in queries]
    assert ("INSERT", "INSERT INTO users (email) VALUES (?)") in prints
    assert ("SELECT", "SELECT id FROM users WHERE email = ? OR id IN (?)") in prints
    assert all(q.database == "shop.db" for q in queries)
    stored = " ".join(q.fingerprint for q in queries)
    assert "example.org" not in stored and "ada" not in stored


def test_opentelemetry_spans_become_events(captured: Captured) -> None:
    from edgemetrics.integrations.opentelemetry import EdgeMetricsSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind, Status, StatusCode

    provider = TracerProvider(resource=Resource.create({"service.name": "catalog"}))
    provider.add_span_processor(SimpleSpanProcessor(EdgeMetricsSpanExporter()))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(
        "GET /items/{id}",
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "GET",
            "http.route": "/items/{id}",
            "http.response.status_code": 503,
        },
    ):
        pass
    with tracer.start_as_current_span(
        "thumbnails process",
        kind=SpanKind.CONSUMER,
        attributes={"messaging.destination.name": "thumbs"},
    ) as span:
        span.set_status(Status(StatusCode.ERROR))
    with tracer.start_as_current_span("internal work"):
        pass
    provider.shutdown()

    events = captured.events()
    (call,) = [e for e in events if isinstance(e, ApiCall)]
    assert (call.service, call.method, call.route, call.status_code, call.errors) == (
        "catalog",
        "GET",
        "/items/{id}",
        503,
        1,
    )
    (job,) = [e for e in events if isinstance(e, Job)]
    assert (job.job_name, job.queue, job.outcome) == ("thumbnails process", "thumbs", "error")
    assert len(events) == 2  # the internal span is not bridged
