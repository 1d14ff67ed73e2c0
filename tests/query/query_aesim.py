"""A stand-in for Cloudflare's AE SQL API on loopback, answering with a real ClickHouse engine.

chdb (ClickHouse in-process) holds the same rows as the embedded store, in AE's table shape
(``timestamp`` DateTime, ``index1``, ``blob1..20`` String, ``double1..20`` Float64,
``_sample_interval`` UInt32). Rows are loaded as JSONEachRow, so the loading path shares
nothing with the compiler's escaping.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from chdb import session as chs

from edgemetrics.layout import DataPoint
from edgemetrics.store import DATASETS

_COLUMNS = (
    "timestamp DateTime('UTC'), index1 String, "
    + ", ".join(f"blob{i} String" for i in range(1, 21))
    + ", "
    + ", ".join(f"double{i} Float64" for i in range(1, 21))
    + ", _sample_interval UInt32"
)

_LOCK = threading.Lock()
_SESSION: chs.Session | None = None


def session() -> chs.Session:
    """The process's one chdb session (chdb allows one at a time), with AE's tables."""
    global _SESSION
    with _LOCK:
        if _SESSION is None:
            _SESSION = chs.Session()
            for table in DATASETS:
                _SESSION.query(f"CREATE TABLE IF NOT EXISTS {table} ({_COLUMNS}) ENGINE = Memory")
        return _SESSION


def load(points: Iterable[DataPoint], *, truncate: bool = True) -> None:
    s = session()
    by_table: dict[str, list[str]] = {t: [] for t in DATASETS}
    for p in points:
        row: dict[str, Any] = {
            "timestamp": int(p.timestamp.timestamp()),
            "index1": p.index1,
            "_sample_interval": p.sample_interval,
        }
        for i in range(20):
            row[f"blob{i + 1}"] = p.blobs[i] if i < len(p.blobs) else ""
            row[f"double{i + 1}"] = p.doubles[i] if i < len(p.doubles) else 0.0
        by_table[p.dataset].append(json.dumps(row))
    with _LOCK:
        for table, rows in by_table.items():
            if truncate:
                s.query(f"TRUNCATE TABLE {table}")
            if rows:
                s.query(f"INSERT INTO {table} FORMAT JSONEachRow " + "\n".join(rows))


def run_ae(sql: str) -> list[dict[str, Any]]:
    """Run AE SQL on chdb and return the JSON ``data`` rows, as the SQL API would."""
    s = session()
    with _LOCK:
        out = s.query(sql, "JSON")
    text = out.bytes().decode("utf-8") if hasattr(out, "bytes") else str(out)
    return list(json.loads(text)["data"]) if text.strip() else []


class ChdbBackend:
    """The AE dialect run straight on chdb (no HTTP): for the many-query equivalence test."""

    dialect = "ae"
    name = "chdb"

    def run(self, sql: str) -> list[dict[str, Any]]:
        return run_ae(sql)


class FakeSqlApi:
    """``POST /client/v4/accounts/{id}/analytics_engine/sql`` on 127.0.0.1, backed by chdb.

    ``fail_next`` makes the next N requests answer 503; ``delay`` sleeps before answering.
    """

    def __init__(self, account: str = "acc", token: str = "tok") -> None:
        self.account = account
        self.token = token
        self.fail_next = 0
        self.delay = 0.0
        self.requests: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                sql = self.rfile.read(length).decode("utf-8")
                api.requests.append(sql)
                if api.delay:
                    time.sleep(api.delay)
                if self.path != f"/client/v4/accounts/{api.account}/analytics_engine/sql":
                    self._send(404, b"not found")
                    return
                if self.headers.get("Authorization") != f"Bearer {api.token}":
                    self._send(401, b'{"errors":[{"message":"Authentication error"}]}')
                    return
                if api.fail_next > 0:
                    api.fail_next -= 1
                    self._send(503, b"upstream unavailable")
                    return
                text = sql.strip()
                if not text.endswith(" FORMAT JSON"):
                    self._send(422, b"expected FORMAT JSON")
                    return
                try:
                    rows = run_ae(text[: -len(" FORMAT JSON")])
                except Exception as exc:  # the engine's own message, as the API relays it
                    self._send(422, str(exc).encode("utf-8", "replace"))
                    return
                self._send(200, json.dumps({"data": rows, "rows": len(rows)}).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/client/v4"

    def __enter__(self) -> FakeSqlApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
