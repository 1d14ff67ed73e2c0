"""One module per host framework or library, as ``edgemetrics.integrations.<name>``.

Each imports its framework only when set up and fails with
:class:`edgemetrics.optional_deps.MissingDependency` when it is not installed:

- ``starlette`` / ``fastapi``: ``instrument(app)`` adds the pure ASGI middleware;
- ``flask``: ``init_app(app)`` (or ``EdgeMetrics(app)``) wraps ``app.wsgi_app``;
- ``django``: ``"edgemetrics.integrations.django.EdgeMetricsMiddleware"`` in ``MIDDLEWARE``;
- ``celery``: ``setup()`` connects to Celery's task signals;
- ``rq``: ``setup()`` times every job a worker performs;
- ``sqlalchemy``: ``instrument(engine)`` times statements by literal-free fingerprint;
- ``opentelemetry``: ``EdgeMetricsSpanExporter`` turns server and consumer spans into events.
"""
