"""Capture cost, end-to-end throughput and spool rates, against the peers, in one run.

    .venv/bin/python benchmarks/exporter.py [--events 200000] [--quick]

Prints, each measured in this run:

* ns per ``track()`` on the caller's thread (a prebuilt event, and building it too)
  against posthog-python's ``capture()`` and an OpenTelemetry span start/end with the
  SDK's ``BatchSpanProcessor``;
* events/s from producer process to the loopback collector's DuckDB store, against
  posthog-python sending the same events to an equivalent loopback endpoint (same
  validation, same encoding, same store);
* spool write rate (batched and durable, durable p50/p99 latency) and replay rate.

Goals (issue 4): track() <= 1 us; >= 200,000 events/s end to end and >= 5x posthog;
durable purchase p99 <= 2 ms.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SECRET = "bench-secret"
HERE = Path(__file__).resolve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- roles run in their own processes ---------------------------------------------


def role_collector(store_path: str, port: int) -> None:
    """``edgemetrics serve``, as a user runs it."""
    from edgemetrics.serve_command import serve

    serve(store_path, SECRET, port=port, log_level="error")


def role_posthog_endpoint(store_path: str, port: int) -> None:
    """PostHog's ``POST /batch/`` doing the collector's work: validate, encode, store.

    It gets what the collector's process gets from ``edgemetrics serve`` and is not
    specific to our protocol: the same store (and its write path), DuckDB in one thread,
    the same gzip inflate, the same garbage-collector settings, uvicorn[standard].
    """
    import gc

    import orjson
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from edgemetrics.collector import ingest_events
    from edgemetrics.store import EmbeddedStore
    from edgemetrics.wire import gunzip_body

    store = EmbeddedStore(store_path)
    store.execute("SET threads = 1")
    stats = {"inserted": 0}
    lock = threading.Lock()

    def ingest(batch: list[dict[str, Any]]) -> None:
        raw = [
            {
                "type": "view",
                "event_id": item["uuid"].replace("-", ""),
                "timestamp": item["timestamp"],
                "content_id": item["properties"]["content_id"],
                "creator_id": item["properties"]["creator_id"],
                "position": item["properties"]["position"],
                "country": item["properties"]["country"],
            }
            for item in batch
        ]
        result = ingest_events(raw)
        n = store.write(result.points)
        with lock:
            stats["inserted"] += n

    async def batch(request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gunzip_body(body, 50 * 2**20)
        await run_in_threadpool(ingest, orjson.loads(body)["batch"])
        return Response(b'{"status": 1}', media_type="application/json")

    async def health(request: Request) -> Response:
        return Response(orjson.dumps(stats), media_type="application/json")

    app = Starlette(
        routes=[
            Route("/batch/", batch, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ]
    )
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


def role_producer(kind: str, url: str, events: int, prebuilt: bool) -> None:
    """Track ``events`` views as fast as the caller can; print the start time."""
    import resource

    from edgemetrics.events import View

    def cpu_now() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    if kind == "edgemetrics":
        from edgemetrics.client import Client
        from edgemetrics.http_sink import HttpSink

        client = Client(
            HttpSink(url, secret=SECRET),
            flush_interval=0.2,
            max_buffer=events + 1,
            health_interval=None,
        )
        built = (
            [
                View(content_id="v1", creator_id="c1", position=3.5, country="DE")
                for _ in range(events)
            ]
            if prebuilt
            else []
        )
        cpu_at_start = cpu_now()
        print(f"START {time.time()}", flush=True)
        track = client.track
        if prebuilt:
            for event in built:
                track(event)
        else:
            for n in range(events):
                track(View(content_id="v1", creator_id="c1", position=n % 600, country="DE"))
        client.flush(600)
        client.close()
    else:
        from posthog import Posthog

        ph = Posthog(
            "phc_bench",
            host=url,
            flush_at=250,
            max_queue_size=events + 1,
            gzip=True,
            enable_local_evaluation=False,
        )
        cpu_at_start = cpu_now()
        print(f"START {time.time()}", flush=True)
        for n in range(events):
            ph.capture(
                "view",
                distinct_id="u1",
                properties={
                    "content_id": "v1",
                    "creator_id": "c1",
                    "position": n % 600,
                    "country": "DE",
                },
            )
        ph.flush()
        ph.shutdown()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"DONE {usage.ru_utime + usage.ru_stime - cpu_at_start}", flush=True)


def role_loadgen(port: int, events: int, connections: int) -> None:
    """The collector's load alone: bodies the exporter would send it (a backlog goes in
    ``NEGOTIATED_BATCH`` views a request to the local collector; built, encoded as the
    exporter encodes them, gzipped and signed before the clock starts), posted as fast as
    ``connections`` keep-alive connections allow. Prints the start time and the answers'
    status codes."""
    import socket

    from edgemetrics.batch import new_batch_id
    from edgemetrics.client import NEGOTIATED_BATCH
    from edgemetrics.events import View
    from edgemetrics.exporter import _encode_alike
    from edgemetrics.signing import sign
    from edgemetrics.wire import encode_body, encode_events, gzip_body

    requests = []
    size = min(NEGOTIATED_BATCH, events)
    for _ in range(events // size):
        batch = [
            View(content_id="v1", creator_id="c1", position=n % 600, country="DE")
            for n in range(size)
        ]
        body = gzip_body(encode_body(new_batch_id(), _encode_alike(batch) or encode_events(batch)))
        head = (
            "POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in sign(body, SECRET).items())
            + "\r\n"
        )
        requests.append(head.encode() + body)
    todo = iter(requests)
    lock = threading.Lock()
    statuses: dict[str, int] = {}

    def send() -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buffer = b""
            while True:
                with lock:
                    request = next(todo, None)
                if request is None:
                    return
                sock.sendall(request)
                while (end := buffer.find(b"\r\n\r\n")) < 0 or len(buffer) < end + 4 + (
                    length := _content_length(buffer[:end])
                ):
                    buffer += sock.recv(65536)
                status = buffer.split(b" ", 2)[1].decode()
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                buffer = buffer[end + 4 + length :]

    threads = [threading.Thread(target=send) for _ in range(connections)]
    print(f"START {time.time()}", flush=True)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"DONE {statuses}", flush=True)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


# --- measurements -------------------------------------------------------------------


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HERE), "--role", *args], stdout=subprocess.PIPE, text=True
    )


def wait_http(port: int) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


ROUNDS = 5


def per_call_ns(fn: Callable[[], object], n: int) -> float:
    """Best of ``ROUNDS`` rounds of ``n // ROUNDS`` calls (the machine is shared: the
    fastest round is the least disturbed one, as timeit reports)."""
    per_round = max(n // ROUNDS, 1)
    best = float("inf")
    for _ in range(ROUNDS):
        gc.collect()
        start = time.perf_counter_ns()
        for _ in range(per_round):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / per_round)
    return best


def track_prebuilt_ns(track: Callable[[Any], None], events: list[Any]) -> float:
    """The caller's loop over prebuilt events, best of ``ROUNDS`` rounds."""
    per_round = len(events) // ROUNDS
    best = float("inf")
    for r in range(ROUNDS):
        chunk = events[r * per_round : (r + 1) * per_round]
        gc.collect()
        start = time.perf_counter_ns()
        for event in chunk:
            track(event)
        best = min(best, (time.perf_counter_ns() - start) / per_round)
    return best


def bench_track(n: int) -> dict[str, float]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from posthog import Posthog

    from edgemetrics.client import Client
    from edgemetrics.events import View
    from edgemetrics.signing import sign
    from edgemetrics.sinks import MemorySink

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    out: dict[str, float] = {}
    # A sink that takes batches without network: the caller-side cost is what is measured.
    client = Client(MemorySink(), flush_interval=5.0, max_buffer=n + 1, health_interval=None)
    events = [View(content_id="v1", creator_id="c1", position=3.5) for _ in range(n)]
    # The exporter thread drains the buffer meanwhile, as it would in an app: its share of
    # the GIL is part of what the caller pays.
    out["track_prebuilt"] = track_prebuilt_ns(client.track, events)
    client.close(timeout=1)
    client = Client(MemorySink(), flush_interval=5.0, max_buffer=n + 1, health_interval=None)
    track = client.track
    out["track_built"] = per_call_ns(
        lambda: track(View(content_id="v1", creator_id="c1", position=3.5)), n
    )
    client.close(timeout=1)

    class HttpShaped:
        """Makes and signs the wire body as the HTTP sink does, then drops it."""

        reads = "body"

        def write(self, batch: Any) -> None:
            sign(batch.gzipped_body(), SECRET)

        def close(self) -> None:
            pass

    # MemorySink takes events in-process (no wire body); this one needs the body.
    client = Client(HttpShaped(), flush_interval=5.0, max_buffer=n + 1, health_interval=None)
    track = client.track
    out["track_built_http_shaped"] = per_call_ns(
        lambda: track(View(content_id="v1", creator_id="c1", position=3.5)), n
    )
    client.close(timeout=1)

    ph = Posthog(
        "phc_bench",
        host="http://127.0.0.1:9",
        send=False,
        max_queue_size=n + 1,
        enable_local_evaluation=False,
    )
    props = {"content_id": "v1", "creator_id": "c1", "position": 3.5}
    out["posthog_capture"] = per_call_ns(
        lambda: ph.capture("view", distinct_id="u1", properties=props), n
    )
    ph.shutdown()

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=n + 1))
    tracer = provider.get_tracer("bench")

    def span() -> None:
        tracer.start_span("view").end()

    out["otel_span"] = per_call_ns(span, n)
    provider.shutdown()
    return out


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_e2e(kind: str, events: int, prebuilt: bool) -> tuple[float, float, float]:
    """Events/s, and CPU microseconds per event in the producer and in the receiver.

    ``kind`` "edgemetrics" and "posthog" run the real client in the producer process;
    "loadgen" sends prebuilt bodies (:func:`role_loadgen`) to measure the collector alone.
    The clock runs from the producer's start until the receiver's ``/healthz`` counts every
    event as inserted into its store."""
    tmp = Path(tempfile.mkdtemp(prefix="em-bench-"))
    port = free_port()
    role = "posthog-endpoint" if kind == "posthog" else "collector"
    server = spawn(role, str(tmp / "store.duckdb"), str(port))
    try:
        wait_http(port)
        import httpx

        url = f"http://127.0.0.1:{port}" + ("" if kind == "posthog" else "/v1/batch")
        server_cpu = proc_cpu_seconds(server.pid)
        if kind == "loadgen":
            prod = spawn("loadgen", str(port), str(events), "4")
        else:
            prod = spawn("producer", kind, url, str(events), "1" if prebuilt else "0")
        assert prod.stdout is not None
        start = float(prod.stdout.readline().split()[1])
        if kind == "loadgen":
            server_cpu = proc_cpu_seconds(server.pid)  # the bodies were built before START
            producer_start = proc_cpu_seconds(prod.pid)
        deadline = time.monotonic() + 900
        inserted = 0
        while time.monotonic() < deadline:
            inserted = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["inserted"]
            if inserted >= events:
                break
            time.sleep(0.01)
        end = time.time()
        server_cpu = proc_cpu_seconds(server.pid) - server_cpu
        if kind == "loadgen":
            producer_cpu = proc_cpu_seconds(prod.pid) - producer_start
            answers = prod.stdout.readline().strip()
            if not ("'200'" in answers or "'202'" in answers) or any(
                code in answers for code in ("'4", "'5")
            ):
                raise RuntimeError(f"loadgen: unexpected answers {answers}")
        else:
            producer_cpu = float(prod.stdout.readline().split()[1])
        prod.wait(60)
        if inserted < events:
            raise RuntimeError(f"{kind}: only {inserted} of {events} arrived")
        return events / (end - start), producer_cpu / events * 1e6, server_cpu / events * 1e6
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def bench_spool(batches: int, durable: int) -> dict[str, float]:
    from edgemetrics.batch import new_batch_id
    from edgemetrics.client import Client
    from edgemetrics.events import Purchase, View
    from edgemetrics.sinks import MemorySink
    from edgemetrics.spool import Spool
    from edgemetrics.wire import encode_body, gzip_body

    out: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="em-spool-"))
    try:
        spool = Spool(tmp / "batched")
        events = [View(content_id="v1", creator_id="c1", position=3.5) for _ in range(250)]
        bodies = []
        for _ in range(batches):
            bid = new_batch_id()
            bodies.append((bid, gzip_body(encode_body(bid, events))))
        start = time.perf_counter()
        for bid, body in bodies:
            spool.put(bid, body, events=250)
        out["spool_batched_events_s"] = batches * 250 / (time.perf_counter() - start)
        spool.close()

        # Replay: a client whose sink takes batches at once drains that spool.
        sink = MemorySink()
        start = time.perf_counter()
        client = Client(sink, spool=tmp / "batched", flush_interval=0.05, health_interval=None)
        while True:
            if client.spool is not None and client.spool.stats().batches == 0:
                break
            time.sleep(0.005)
        out["replay_events_s"] = batches * 250 / (time.perf_counter() - start)
        client.close(timeout=1)

        client = Client(
            MemorySink(), spool=tmp / "durable", flush_interval=5.0, health_interval=None
        )
        purchases = [
            Purchase(amount_minor=499, currency="EUR", transaction_id=f"tx{n}", creator_id="c1")
            for n in range(durable)
        ]
        latencies = []
        for purchase in purchases:
            t0 = time.perf_counter_ns()
            client.track_durable(purchase)
            latencies.append(time.perf_counter_ns() - t0)
        client.close(timeout=5)
        latencies.sort()
        out["durable_events_s"] = 1e9 / statistics.mean(latencies)
        # The disk's own floor: one 4 KiB write + fdatasync, as SQLite's WAL commit does.
        fd = os.open(tmp / "fsync-probe", os.O_RDWR | os.O_CREAT)
        floor = []
        for n in range(durable):
            os.pwrite(fd, b"x" * 4096, n * 4096)
            t0 = time.perf_counter_ns()
            os.fdatasync(fd)
            floor.append(time.perf_counter_ns() - t0)
        os.close(fd)
        floor.sort()
        out["fsync_p50_ms"] = floor[len(floor) // 2] / 1e6
        out["fsync_p99_ms"] = floor[int(len(floor) * 0.99)] / 1e6
        out["durable_p50_ms"] = latencies[len(latencies) // 2] / 1e6
        out["durable_p99_ms"] = latencies[int(len(latencies) * 0.99)] / 1e6
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role")
    parser.add_argument("rest", nargs="*")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    args = parser.parse_args()
    if args.role == "collector":
        role_collector(args.rest[0], int(args.rest[1]))
        return 0
    if args.role == "posthog-endpoint":
        role_posthog_endpoint(args.rest[0], int(args.rest[1]))
        return 0
    if args.role == "producer":
        role_producer(args.rest[0], args.rest[1], int(args.rest[2]), args.rest[3] == "1")
        return 0
    if args.role == "loadgen":
        role_loadgen(int(args.rest[0]), int(args.rest[1]), int(args.rest[2]))
        return 0

    events = 20_000 if args.quick else args.events
    print(
        f"edgemetrics exporter benchmark: {os.cpu_count()} cores, Python "
        f"{sys.version.split()[0]}, load average at start {os.getloadavg()}"
    )
    t = bench_track(min(events, 200_000))
    print(f"track() prebuilt event:       {t['track_prebuilt']:8.0f} ns/call (goal <= 1000)")
    print(
        f"track(View(...)) incl. build: {t['track_built']:8.0f} ns/call (in-process sink); "
        f"{t['track_built_http_shaped']:.0f} ns/call with a sink that needs the wire body"
    )
    print(
        f"posthog capture():            {t['posthog_capture']:8.0f} ns/call  "
        f"ratio posthog/track = {t['posthog_capture'] / t['track_prebuilt']:.1f}x "
        f"(incl. build: {t['posthog_capture'] / t['track_built']:.2f}x)"
    )
    print(
        f"otel span start/end (Batch):  {t['otel_span']:8.0f} ns/call  "
        f"ratio otel/track = {t['otel_span'] / t['track_prebuilt']:.1f}x "
        f"(incl. build: {t['otel_span'] / t['track_built']:.2f}x)"
    )
    from edgemetrics.client import NEGOTIATED_BATCH

    alone, _, alone_r = bench_e2e("loadgen", events, prebuilt=True)
    ours, ours_p, ours_r = bench_e2e("edgemetrics", events, prebuilt=False)
    pre, pre_p, pre_r = bench_e2e("edgemetrics", events, prebuilt=True)
    ph_events = max(events // 4, 5000)
    theirs, ph_p, ph_r = bench_e2e("posthog", ph_events, prebuilt=False)
    print(
        f"end to end edgemetrics -> collector store: {ours:10.0f} events/s "
        f"({events} events built in the loop; goal >= 200000); CPU/event: "
        f"producer {ours_p:.1f} us, collector {ours_r:.1f} us"
    )
    print(
        f"end to end edgemetrics, prebuilt events:   {pre:10.0f} events/s; CPU/event: "
        f"producer {pre_p:.1f} us, collector {pre_r:.1f} us"
    )
    print(
        f"collector alone (prebuilt bodies of {NEGOTIATED_BATCH}): {alone:8.0f} events/s; CPU/ev: "
        f"collector {alone_r:.1f} us (goal <= 4 us)"
    )
    print(
        f"end to end posthog -> equivalent endpoint: {theirs:10.0f} events/s "
        f"({ph_events} events); CPU/event: producer {ph_p:.1f} us, endpoint {ph_r:.1f} us"
    )
    print(f"ratio edgemetrics/posthog = {ours / theirs:.1f}x (goal >= 5x)")
    print(
        "CPU per event, producer + receiver: "
        f"edgemetrics {ours_p + ours_r:.1f} us, posthog {ph_p + ph_r:.1f} us, "
        f"ratio {(ph_p + ph_r) / (ours_p + ours_r):.1f}x"
    )
    s = bench_spool(batches=100 if args.quick else 400, durable=300 if args.quick else 2000)
    print(f"spool write, batched (250/commit): {s['spool_batched_events_s']:10.0f} events/s")
    print(
        f"spool write, durable (fsync each): {s['durable_events_s']:10.0f} events/s, "
        f"p50 {s['durable_p50_ms']:.3f} ms, p99 {s['durable_p99_ms']:.3f} ms (goal p99 <= 2 ms)"
    )
    print(
        f"disk floor, 4 KiB write + fdatasync: p50 {s['fsync_p50_ms']:.3f} ms, "
        f"p99 {s['fsync_p99_ms']:.3f} ms"
    )
    print(f"spool replay:                      {s['replay_events_s']:10.0f} events/s")
    print(f"load average at the end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
