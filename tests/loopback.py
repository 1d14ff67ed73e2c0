"""A loopback HTTP receiver and a sink posting to it: events cross process boundaries.

The sink opens a fresh connection per batch and keeps no other state, so it works the
same in a forked gunicorn worker, an RQ work horse or a uvicorn worker process.
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edgemetrics.client import Batch
from edgemetrics.events import Event, parse_event


class JsonPostSink:
    """POSTs each batch as ``{"batch_id", "pid", "events": [...]}`` to a loopback URL."""

    def __init__(self, port: int) -> None:
        self.port = port

    def write(self, batch: Batch) -> None:
        import os

        body = json.dumps(
            {
                "batch_id": batch.batch_id,
                "pid": os.getpid(),
                "events": [e.model_dump(mode="json") for e in batch.events],
            }
        ).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", "/batch", body, {"content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"receiver answered {response.status}")
        finally:
            conn.close()

    def close(self) -> None:
        pass


class Receiver:
    """Collects posted events (validated again with parse_event) and the sender pids."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.pids: set[int] = set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data: dict[str, Any] = json.loads(
                    self.rfile.read(int(self.headers["content-length"]))
                )
                with receiver._lock:
                    receiver.events.extend(parse_event(e) for e in data["events"])
                    receiver.pids.add(int(data["pid"]))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def snapshot(self) -> tuple[list[Event], set[int]]:
        with self._lock:
            return list(self.events), set(self.pids)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
