"""``edgemetrics demo``: the demo platform on the embedded store, with live traffic."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import httpx

import edgemetrics


def add_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "demo", help="run a demo creator platform with the dashboard at /analytics"
    )
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="where the DuckDB store lives"
    )
    parser.add_argument(
        "--sessions", type=int, default=400, help="viewing sessions to replay over the past month"
    )
    parser.add_argument(
        "--live",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep generating a session every two seconds after the replay",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from edgemetrics.demo.app import create_app
    from edgemetrics.demo.traffic import TrafficGenerator
    from edgemetrics.sinks import StoreSink
    from edgemetrics.store import EmbeddedStore

    data_dir: Path = args.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    # A fresh store each run, so the tally and the dashboard start from the same zero.
    store_path = data_dir / "demo.duckdb"
    for stale in (store_path, store_path.with_suffix(".duckdb.wal")):
        stale.unlink(missing_ok=True)
    store = EmbeddedStore(store_path)
    edgemetrics.configure(sink=StoreSink(store), flush_interval=1.0)

    base_url = f"http://{args.host}:{args.port}"
    generator = TrafficGenerator(base_url, data_dir / "generator.json")
    server = uvicorn.Server(
        uvicorn.Config(create_app(store), host=args.host, port=args.port, log_level="warning")
    )

    def drive() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not server.started:
            time.sleep(0.05)
        print(f"edgemetrics demo: dashboard at {base_url}/analytics/ (Ctrl-C stops)", flush=True)
        try:
            generator.run(args.sessions, live=args.live)
        except httpx.HTTPError as exc:  # the server is going away
            print(f"edgemetrics demo: traffic stopped: {exc}", flush=True)

    threading.Thread(target=drive, name="demo-traffic", daemon=True).start()
    try:
        server.run()
    finally:
        generator.stop()
        edgemetrics.shutdown()
        store.close()
    return 0
