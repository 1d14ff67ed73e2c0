"""Added cost per request of HTTP instrumentation, in-process, against the peers.

Drives each app directly (an ASGI scope/receive/send loop, or a WSGI environ and
start_response), with no network, many requests per round and the best of many rounds;
the variants of one framework run interleaved round by round so drift hits them alike.
Time is the process's CPU time (``time.process_time``: every thread of this process,
the exporter's included, and none of the time other processes hold the cores), so the
figures stay meaningful on a shared machine. Printed: microseconds per request of the
bare app, the microseconds each middleware adds, and the ratios.

Peers, each set up as its documentation shows for production use:
- opentelemetry-instrumentation-asgi / -wsgi: the SDK ``TracerProvider`` with a
  ``BatchSpanProcessor`` whose exporter discards the spans (no I/O, as ours).
- prometheus-fastapi-instrumentator: ``Instrumentator().instrument(app)`` on its own
  registry (the default metrics: counters and histograms per handler).
- edgemetrics: the middleware with a client whose sink discards batches; its exporter
  thread runs as in production and builds every event during the timed rounds. The
  headline figure uses an HTTP-shaped sink: the exporter serialises, gzips and signs each
  batch as for the Worker, and the sink discards the body instead of posting it. A second
  figure uses an in-process sink (``reads = "events"``, as the embedded store's), for which
  the exporter makes no wire body.

With ``--instructions`` it counts instead, under callgrind (valgrind), the instructions
each request costs in every thread of the process: exact and repeatable whatever else
the machine runs, where CPU time on a shared machine moves with its load. They are also
shown in microseconds at the bare app's rate (its instructions over its CPU time).

Run: ``python benchmarks/middleware.py [--requests N] [--rounds R] [--instructions]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import edgemetrics
from edgemetrics.client import Batch, Client
from edgemetrics.signing import sign

CLOCK = time.process_time
Driver = Callable[[Any, int], float]


class DiscardSink:
    """HTTP-shaped: signs the gzipped body as the HTTP sink does, then drops it (no I/O)."""

    reads = "body"

    def __init__(self) -> None:
        self.events = 0

    def write(self, batch: Batch) -> None:
        sign(batch.gzipped_body(), "bench-secret")
        self.events += len(batch)

    def close(self) -> None:
        pass


class DiscardEventsSink(DiscardSink):
    """In-process, as the embedded store's sink: takes the events, needs no wire body."""

    reads = "events"

    def write(self, batch: Batch) -> None:
        self.events += len(batch.events)


def on_client(client: Any, driver: Driver) -> Driver:
    """A driver whose rounds run with ``client`` as the process's edgemetrics client."""

    def run(app: Any, n: int) -> float:
        saved = edgemetrics._client
        edgemetrics._client = client
        try:
            return driver(app, n)
        finally:
            edgemetrics._client = saved

    return run


# --- drivers ----------------------------------------------------------------------------


SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/items/42",
    "raw_path": b"/items/42",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"bench"), (b"user-agent", b"bench/1.0"), (b"accept", b"*/*")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}


def asgi_round(app: Any, n: int) -> float:
    """Seconds per request for n requests through an ASGI app."""
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: Any) -> None:
        pass

    async def run() -> float:
        start = CLOCK()
        for _ in range(n):
            await app(dict(SCOPE), receive, send)
        edgemetrics.flush()  # the exporter's work for this round counts in this round
        return CLOCK() - start

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(run()) / n
    finally:
        loop.close()


ENVIRON: dict[str, Any] = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "PATH_INFO": "/items/42",
    "QUERY_STRING": "",
    "SERVER_NAME": "bench",
    "SERVER_PORT": "8000",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_HOST": "bench",
    "HTTP_USER_AGENT": "bench/1.0",
    "wsgi.url_scheme": "http",
    "wsgi.version": (1, 0),
    "wsgi.multithread": False,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
}


def wsgi_round(app: Any, n: int) -> float:
    """Seconds per request for n requests through a WSGI app."""
    import io
    import sys

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return None

    start = CLOCK()
    for _ in range(n):
        environ = dict(ENVIRON)
        environ["wsgi.input"] = io.BytesIO(b"")
        environ["wsgi.errors"] = sys.stderr
        body = app(environ, start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    edgemetrics.flush()  # the exporter's work for this round counts in this round
    return (CLOCK() - start) / n


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by name (pthread CPU clocks)."""
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            clock = time.pthread_getcpuclockid(thread.ident)
            spent = time.clock_gettime(clock)
        except (OSError, AttributeError):  # a thread that just ended; no such clock here
            continue
        # A pool's threads (edgemetrics-send_0, _1, ...) count as one.
        name = "request thread" if thread is threading.main_thread() else thread.name
        name = name.rsplit("_", 1)[0] if name.rsplit("_", 1)[-1].isdigit() else name
        out[name] = out.get(name, 0.0) + spent
    return out


def best_of(
    variants: Sequence[tuple[str, Any, Driver]], n: int, rounds: int
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Best seconds per request of each variant, interleaved round by round, and how the
    best round's CPU split between the request thread and the others (s per request).

    Threads started after a round began (a pool's sender) count from zero, which is
    what they spent in it."""
    best = {name: float("inf") for name, _, _ in variants}
    split: dict[str, dict[str, float]] = {}
    for _, app, driver in variants:  # warm up: imports, caches, first-call paths
        driver(app, min(n, 500))
    for _ in range(rounds):
        for name, app, driver in variants:
            gc.collect()
            before = thread_cpu()
            seconds = driver(app, n)
            after = thread_cpu()
            if seconds < best[name]:
                best[name] = seconds
                split[name] = {
                    thread: (spent - before.get(thread, 0.0)) / n
                    for thread, spent in after.items()
                    if spent - before.get(thread, 0.0) > 0.0
                }
    return best, split


# --- apps -------------------------------------------------------------------------------


def fastapi_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app


def flask_app() -> Any:
    from flask import Flask

    app = Flask("bench")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app


def otel_tracer_provider() -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class DiscardSpans(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardSpans()))
    return provider


class CaptureClient:
    """Stands in for the client: keeps the middleware's records from the exporter.

    It has what the middlewares use of a client (the buffer, its bound, the wake-up mark,
    ``track_raw``), so a request pays exactly what it pays with the real one, and
    ``flush`` has nothing to wait for."""

    max_buffer = 1 << 62
    _raw_wake = -1  # never reached: the exporter is never woken

    def __init__(self) -> None:
        self._buffer: list[tuple[Any, ...]] = []

    @property
    def records(self) -> list[tuple[Any, ...]]:
        return self._buffer

    def track_raw(self, record: tuple[Any, ...]) -> None:
        self._buffer.append(record)

    def flush(self, timeout: float = 10.0) -> bool:
        return True


def request_path_only(driver: Driver) -> Driver:
    """A driver whose rounds keep edgemetrics' records from the exporter (list append).

    Measures what a request itself pays; the exporter's share is measured apart.
    """

    def run(app: Any, n: int) -> float:
        return on_client(CaptureClient(), driver)(app, n)

    return run


def exporter_cost(app: Any, driver: Driver, n: int = 5_000) -> tuple[float, float]:
    """CPU microseconds the exporter spends per request's record, for an HTTP sink (wire
    text, JSON array, gzip, signature; in batches of 250) and for an in-process sink
    (an ApiCall model), measured on the records of ``n`` real requests."""
    from edgemetrics.batch import new_batch_id
    from edgemetrics.wire import encode_body, encode_events, gzip_body

    capture = CaptureClient()
    on_client(capture, driver)(app, n)
    client = edgemetrics.get_client()
    assert client is not None
    # Records as fresh as the exporter sees them (the clock offset is per second).
    now = time.perf_counter()
    records = [(*r[:4], now, now + (r[5] - r[4]), *r[6:]) for r in capture.records]
    chunks = [records[i : i + 250] for i in range(0, len(records), 250)]

    def http() -> None:
        for chunk in chunks:
            body = gzip_body(encode_body(new_batch_id(), encode_events(client.build_wire(chunk))))
            sign(body, "bench-secret")

    def models() -> None:
        for chunk in chunks:
            client.build_raw(chunk)

    out = []
    for work in (http, models):
        best = float("inf")
        for _ in range(7):
            start = time.thread_time()
            work()
            best = min(best, (time.thread_time() - start) / len(records))
        out.append(best * 1e6)
    return out[0], out[1]


# --- instruction counts (callgrind) -----------------------------------------------------

# Variants counted by --instructions: (framework, name, requests in the short and the long
# run). The difference between the two runs is what the requests cost; start-up, warm-up
# and exit cancel out.
COUNTED = [
    ("FastAPI", "bare", 1000, 3000),
    ("FastAPI", "edgemetrics", 1000, 3000),
    ("FastAPI", "edgemetrics-request-path", 1000, 3000),
    ("FastAPI", "otel-asgi", 200, 600),
    ("Flask", "bare", 1000, 3000),
    ("Flask", "edgemetrics", 1000, 3000),
    ("Flask", "edgemetrics-request-path", 1000, 3000),
    ("Flask", "otel-wsgi", 200, 600),
]


def role_count(framework: str, name: str, n: int) -> None:
    """One variant, ``n`` requests after a warm-up, the exporter's work included (the
    round ends with a flush); run under callgrind by :func:`count_instructions`."""
    sink = DiscardSink()
    edgemetrics.configure(sink=sink)
    if framework == "FastAPI":
        from edgemetrics.asgi import EdgeMetricsMiddleware

        app = fastapi_app()
        if name.startswith("edgemetrics"):
            app.add_middleware(EdgeMetricsMiddleware)
        elif name == "otel-asgi":
            from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

            app.add_middleware(OpenTelemetryMiddleware, tracer_provider=otel_tracer_provider())
        driver: Driver = asgi_round
    else:
        from edgemetrics.integrations.flask import init_app

        app = flask_app()
        if name.startswith("edgemetrics"):
            init_app(app)
        elif name == "otel-wsgi":
            from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

            app.wsgi_app = OpenTelemetryMiddleware(  # type: ignore[method-assign]
                app.wsgi_app, tracer_provider=otel_tracer_provider()
            )
        driver = wsgi_round
    if name == "edgemetrics-request-path":
        driver = request_path_only(driver)
    driver(app, 300)
    gc.collect()
    driver(app, n)
    edgemetrics.shutdown()


def count_instructions() -> None:
    """Instructions per request of each variant (callgrind: every thread of the process,
    exactly, whatever else the machine runs), printed with what they add over the bare app
    and that in microseconds at the bare app's measured rate (instructions per us)."""
    import re
    import subprocess
    import sys
    import tempfile

    # One hash seed for every counted process: str hashes decide where keys land in
    # dicts and sets (the interpreter's own, Flask's and Werkzeug's, ours), so how many
    # probes a lookup takes and when a table resizes; with a random seed per process,
    # runs of the same code differed by up to ~4000 instructions per request.
    env = {**os.environ, "PYTHONHASHSEED": "0"}

    def run(framework: str, name: str, n: int) -> int:
        with tempfile.TemporaryDirectory() as tmp:
            out = f"{tmp}/callgrind.out"
            subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={out}",
                    sys.executable,
                    __file__,
                    "--role-count",
                    framework,
                    name,
                    str(n),
                ],
                check=True,
                capture_output=True,
                env=env,
            )
            with open(out) as f:
                match = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.MULTILINE)
            assert match is not None, "callgrind wrote no totals"
            return int(match.group(1))

    per_request: dict[tuple[str, str], float] = {}
    for framework, name, short, long in COUNTED:
        per_request[framework, name] = (
            run(framework, name, long) - run(framework, name, short)
        ) / (long - short)
    # The bare app's rate on this machine, from its CPU time: turns instructions into us.
    edgemetrics.configure(sink=DiscardSink())
    rates = {
        "FastAPI": per_request["FastAPI", "bare"]
        / (best_of([("bare", fastapi_app(), asgi_round)], 3000, 5)[0]["bare"] * 1e6),
        "Flask": per_request["Flask", "bare"]
        / (best_of([("bare", flask_app(), wsgi_round)], 3000, 5)[0]["bare"] * 1e6),
    }
    edgemetrics.shutdown()
    print("instructions per request (callgrind, every thread of the process), over the bare app:")
    for framework, peer in (("FastAPI", "otel-asgi"), ("Flask", "otel-wsgi")):
        bare = per_request[framework, "bare"]
        rate = rates[framework]
        print(f"{framework} bare app: {bare:.0f} instructions/request ({rate:.0f} per us)")
        for name in ("edgemetrics", "edgemetrics-request-path", peer):
            extra = per_request[framework, name] - bare
            print(
                f"{framework} + {name}: +{extra:.0f} instructions/request = +{extra / rate:.2f} us"
            )
        ours = per_request[framework, "edgemetrics"] - bare
        theirs = per_request[framework, peer] - bare
        goal = ours / rate <= 3.0 and theirs >= 20 * ours
        print(
            f"goal ({framework}, exporter included, in instructions: <= 3 us at the bare "
            f"app's rate and <= 1/20 of {peer}'s): {'met' if goal else 'NOT met'} "
            f"({ours / rate:.2f} us, {theirs / ours:.0f}x less than {peer})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Rounds long enough that the exporter thread does its share of the work inside them
    # (each round ends with a flush), and many of them: the best is the least disturbed.
    parser.add_argument("--requests", type=int, default=5_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=15, help="rounds; the best one counts")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per request under callgrind instead (valgrind; minutes)",
    )
    parser.add_argument("--role-count", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role_count:
        framework, name, n = args.role_count
        role_count(framework, name, int(n))
        return
    if args.instructions:
        print(f"load average at start {os.getloadavg()}")
        count_instructions()
        print(f"load average at the end: {os.getloadavg()}")
        return
    load_at_start = os.getloadavg()

    from edgemetrics.integrations.flask import init_app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as OtelASGI
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as OtelWSGI
    from prometheus_client import CollectorRegistry
    from prometheus_fastapi_instrumentator import Instrumentator

    from edgemetrics.asgi import EdgeMetricsMiddleware

    sink = DiscardSink()
    edgemetrics.configure(sink=sink)
    events_sink = DiscardEventsSink()
    in_process = Client(events_sink)
    provider = otel_tracer_provider()

    bare = fastapi_app()
    ours = fastapi_app()
    ours.add_middleware(EdgeMetricsMiddleware)
    ours_cost = fastapi_app()
    ours_cost.add_middleware(EdgeMetricsMiddleware, cost_mode=True)
    otel = fastapi_app()
    otel.add_middleware(OtelASGI, tracer_provider=provider)
    prom = fastapi_app()
    Instrumentator(registry=CollectorRegistry()).instrument(prom)
    asgi, asgi_split = best_of(
        [
            ("bare", bare, asgi_round),
            ("edgemetrics", ours, asgi_round),
            ("edgemetrics-in-process-sink", ours, on_client(in_process, asgi_round)),
            ("edgemetrics-request-path", ours, request_path_only(asgi_round)),
            ("edgemetrics-cost-mode", ours_cost, asgi_round),
            ("otel-asgi", otel, asgi_round),
            ("prometheus", prom, asgi_round),
        ],
        args.requests,
        args.rounds,
    )

    fbare = flask_app()
    fours = flask_app()
    init_app(fours)
    fotel = flask_app()
    fotel.wsgi_app = OtelWSGI(fotel.wsgi_app, tracer_provider=provider)  # type: ignore[method-assign]
    wsgi, wsgi_split = best_of(
        [
            ("bare", fbare, wsgi_round),
            ("edgemetrics", fours, wsgi_round),
            ("edgemetrics-in-process-sink", fours, on_client(in_process, wsgi_round)),
            ("edgemetrics-request-path", fours, request_path_only(wsgi_round)),
            ("otel-wsgi", fotel, wsgi_round),
        ],
        args.requests,
        args.rounds,
    )
    edgemetrics.flush()
    exported = sink.events
    http_us, model_us = exporter_cost(ours, asgi_round)
    wsgi_http_us, wsgi_model_us = exporter_cost(fours, wsgi_round)

    def added(results: dict[str, float], name: str) -> float:
        return (results[name] - results["bare"]) * 1e6

    def threads(split: dict[str, dict[str, float]], name: str) -> str:
        """Where the added CPU went in the best round: request thread vs the others."""
        mine, base = split.get(name, {}), split.get("bare", {})
        request = (mine.get("request thread", 0.0) - base.get("request thread", 0.0)) * 1e6
        others = sorted(
            (thread, spent * 1e6) for thread, spent in mine.items() if thread != "request thread"
        )
        shown = ", ".join(f"{thread} {us:.2f}" for thread, us in others if us >= 0.005)
        return f"request thread {request:+.2f} us; other threads: {shown or 'none'}"

    print(
        f"requests per round: {args.requests}, rounds: {args.rounds} (best round counts); "
        f"load average at start {load_at_start}"
    )
    print(
        "figures: CPU time of the whole process per request (every thread: the request's "
        "and edgemetrics' exporter and senders), over the bare app"
    )
    print(f"FastAPI bare app: {asgi['bare'] * 1e6:.2f} us/request")
    em = added(asgi, "edgemetrics")
    for name in ("edgemetrics", "otel-asgi", "prometheus"):
        print(
            f"FastAPI + {name}: +{added(asgi, name):.2f} us/request ({threads(asgi_split, name)})"
        )
    print(
        "  edgemetrics with an in-process sink (no wire body, as the embedded store's): "
        f"+{added(asgi, 'edgemetrics-in-process-sink'):.2f} us/request"
    )
    print(
        f"  edgemetrics on the request path alone: +{added(asgi, 'edgemetrics-request-path'):.2f}"
        f" us/request; measured apart, its exporter spends {http_us:.2f} us per request for"
        f" an HTTP sink (wire text, array, gzip, signature) and {model_us:.2f} us building an"
        " ApiCall model for an in-process sink (CPU, off the request path)"
    )
    print(
        "FastAPI + edgemetrics in cost mode (per-minute aggregates), exporter included: "
        f"+{added(asgi, 'edgemetrics-cost-mode'):.2f} us/request"
    )
    print(f"ratio otel-asgi / edgemetrics: {added(asgi, 'otel-asgi') / em:.1f}x")
    print(
        "ratio prometheus-fastapi-instrumentator / edgemetrics: "
        f"{added(asgi, 'prometheus') / em:.1f}x"
    )
    print(f"Flask bare app: {wsgi['bare'] * 1e6:.2f} us/request")
    fem = added(wsgi, "edgemetrics")
    for name in ("edgemetrics", "otel-wsgi"):
        split = threads(wsgi_split, name)
        print(f"Flask + {name}: +{added(wsgi, name):.2f} us/request ({split})")
    print(
        "  edgemetrics with an in-process sink: "
        f"+{added(wsgi, 'edgemetrics-in-process-sink'):.2f} us/request"
    )
    print(
        f"  edgemetrics on the request path alone: +{added(wsgi, 'edgemetrics-request-path'):.2f}"
        f" us/request; measured apart, its exporter spends {wsgi_http_us:.2f} us (HTTP sink)"
        f" / {wsgi_model_us:.2f} us (model) per request"
    )
    print(f"ratio otel-wsgi / edgemetrics: {added(wsgi, 'otel-wsgi') / fem:.1f}x")
    for framework, results, peer in (("FastAPI", asgi, "otel-asgi"), ("Flask", wsgi, "otel-wsgi")):
        for label, name in (
            ("request path", "edgemetrics-request-path"),
            ("exporter included", "edgemetrics"),
        ):
            value = added(results, name)
            ratio = added(results, peer) / value if value > 0 else float("inf")
            # A negative difference is noise (the machine was busy), never a pass.
            goal = 0.0 < value <= 3.0 and ratio >= 20
            print(
                f"goal ({framework}, {label}: <= 3 us and <= 1/20 of {peer}'s): "
                f"{'met' if goal else 'NOT met'} ({value:.2f} us, {ratio:.0f}x less than {peer})"
            )
    print(f"events exported by edgemetrics during the run: {exported + events_sink.events}")
    in_process.close()
    edgemetrics.shutdown()
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
