"""The HTTP sink over real loopback sockets: keep-alive, stale connections, timeouts, proxies."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import orjson
import pytest

from edgemetrics.batch import Batch, BatchRejected, SinkError
from edgemetrics.events import View
from edgemetrics.http_sink import HttpSink
from edgemetrics.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from edgemetrics.wire import gunzip_body

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n"
OK_BODY = b'{"rejected":[]}'


class Seen:
    """What a raw loopback server saw: request lines, connections, bodies."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.bodies: list[bytes] = []
        self.connections = 0


def read_request(conn: socket.socket, buf: bytes) -> tuple[bytes, dict[str, str], bytes, bytes]:
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            raise EOFError
        buf += data
    head, _, buf = buf.partition(b"\r\n\r\n")
    line, *rest = head.split(b"\r\n")
    headers = {}
    for item in rest:
        name, _, value = item.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(buf) < length:
        buf += conn.recv(65536)
    return line, headers, buf[:length], buf[length:]


@contextmanager
def raw_server(answer: Callable[[Seen, int], bytes | None]) -> Iterator[tuple[int, Seen]]:
    """A keep-alive HTTP server; ``answer(seen, n)`` gives the n-th reply (None: hang up)."""
    seen = Seen()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        buf = b""
        with conn:
            while not stop.is_set():
                try:
                    line, headers, body, buf = read_request(conn, buf)
                except (EOFError, OSError):
                    return
                seen.lines.append(line)
                seen.headers.append(headers)
                seen.bodies.append(body)
                reply = answer(seen, len(seen.lines))
                if reply is None:
                    return
                conn.sendall(reply)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            seen.connections += 1
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1], seen
    finally:
        stop.set()
        listener.close()


def batch() -> Batch:
    return Batch([View(content_id="v1", creator_id="c1")])


def test_batches_go_signed_and_gzipped_over_one_kept_alive_connection() -> None:
    with raw_server(lambda seen, n: OK + OK_BODY) as (port, seen):
        sink = HttpSink(f"http://127.0.0.1:{port}/v1/batch?k=1", secret="s3")
        sent = [batch() for _ in range(5)]
        for b in sent:
            assert sink.write(b) == 0
        sink.close()
    assert seen.connections == 1
    assert seen.lines[0] == b"POST /v1/batch?k=1 HTTP/1.1"
    for b, headers, body in zip(sent, seen.headers, seen.bodies, strict=True):
        verify(body, headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()], "s3")
        assert headers["content-encoding"] == "gzip"
        assert orjson.loads(gunzip_body(body))["batch_id"] == b.batch_id


def test_a_connection_the_server_closed_while_idle_is_replaced_without_an_error() -> None:
    # The server answers each request, then hangs up (as an idle timeout would).
    def answer(seen: Seen, n: int) -> bytes | None:
        return None if n % 2 == 0 else OK + OK_BODY

    with raw_server(answer) as (port, seen):
        sink = HttpSink(f"http://127.0.0.1:{port}/v1/batch", secret="s")
        assert sink.write(batch()) == 0
        # The kept connection is dead (the server drops the next request unanswered):
        # the sink sends again on a fresh one, and that one is answered.
        assert sink.write(batch()) == 0
        sink.close()
    assert seen.connections == 2 and len(seen.lines) == 3


def test_no_answer_within_the_timeout_is_a_retryable_error() -> None:
    def answer(seen: Seen, n: int) -> bytes | None:
        time.sleep(1.0)
        return OK + OK_BODY

    with raw_server(answer) as (port, _):
        sink = HttpSink(f"http://127.0.0.1:{port}/v1/batch", secret="s", timeout=0.2)
        started = time.monotonic()
        with pytest.raises(SinkError, match="transport error"):
            sink.write(batch())
        assert time.monotonic() - started < 0.9
        sink.close()


def test_answers_map_to_retry_or_refusal() -> None:
    replies = {
        1: b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n",
        2: b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n",
        3: b"HTTP/1.1 401 No\r\nContent-Length: 13\r\n\r\nbad signature",
        4: b'HTTP/1.1 200 OK\r\nContent-Length: 26\r\n\r\n{"rejected":[{"index":0}]}',
    }
    with raw_server(lambda seen, n: replies[n]) as (port, _):
        sink = HttpSink(f"http://127.0.0.1:{port}/v1/batch", secret="s")
        with pytest.raises(SinkError) as retry:
            sink.write(batch())
        assert retry.value.retry_after == 7.0 and retry.value.status == 429
        with pytest.raises(SinkError) as busy:
            sink.write(batch())
        assert busy.value.status == 503
        with pytest.raises(BatchRejected, match="401 bad signature"):
            sink.write(batch())
        assert sink.write(batch()) == 1
        sink.close()


def test_the_environments_proxy_is_used_unless_the_host_is_excluded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with raw_server(lambda seen, n: OK + OK_BODY) as (port, seen):
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        sink = HttpSink("http://ingest.example.invalid/v1/batch", secret="s")
        assert sink.write(batch()) == 0
        sink.close()
        monkeypatch.setenv("no_proxy", "ingest.example.invalid")
        direct = HttpSink("http://ingest.example.invalid/v1/batch", secret="s", timeout=0.5)
        with pytest.raises(SinkError):  # no such host: it did not go through the proxy
            direct.write(batch())
    assert seen.lines == [b"POST http://ingest.example.invalid/v1/batch HTTP/1.1"]


def test_the_receivers_per_request_limit_is_kept_from_its_answers() -> None:
    limited = b"HTTP/1.1 200 OK\r\nX-Edgemetrics-Max-Events: 5000\r\nContent-Length: 15\r\n\r\n"
    answers = [limited + OK_BODY, OK + OK_BODY]
    with raw_server(lambda seen, n: answers[n - 1]) as (port, _):
        sink = HttpSink(f"http://127.0.0.1:{port}/v1/batch", secret="s3")
        assert sink.max_events is None  # nothing said yet: the exporter keeps to 250
        sink.write(batch())
        assert sink.max_events == 5000
        sink.write(batch())  # an answer without the header (the Worker's) takes it back
        assert sink.max_events is None
        sink.close()
