"""``edgemetrics serve``: run the local collector (``POST /v1/batch``) over the embedded store.

The shared secret comes from the environment (``EDGEMETRICS_SECRET`` unless
``--secret-env`` names another variable), never from the command line where ``ps``
would show it.

>>> import argparse
>>> parser = argparse.ArgumentParser(prog="edgemetrics")
>>> add_command(parser.add_subparsers())
>>> args = parser.parse_args(["serve", "--store", "em.duckdb", "--port", "9000"])
>>> args.port, args.host
(9000, '127.0.0.1')
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import sys

log = logging.getLogger("edgemetrics")


def add_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``serve`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "serve",
        help="run the local collector (the Worker's ingest protocol) over the embedded store",
    )
    parser.add_argument("--store", required=True, help="DuckDB file of the embedded store")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8787, help="port to listen on")
    parser.add_argument(
        "--secret-env",
        default="EDGEMETRICS_SECRET",
        help="environment variable holding the shared signing secret",
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn's log level")
    parser.add_argument(
        "--duckdb-threads",
        type=int,
        default=1,
        help="threads DuckDB may use for inserts (one spends the least CPU per event)",
    )
    parser.add_argument(
        "--privacy-keys",
        default=None,
        help="the privacy key store shared with the senders: opted-out users' events are dropped",
    )
    parser.set_defaults(func=run)


def _extra_routes(store: object, settings: object) -> list[object]:
    # The browser endpoint lives in its own module; serve it when it is installed.
    try:
        collect = importlib.import_module("edgemetrics.collect")
    except ModuleNotFoundError:
        return []
    routes = collect.routes(store, settings)
    return list(routes)


def run(args: argparse.Namespace) -> int:
    """Start uvicorn with the collector app; returns the exit status."""
    secret = os.environ.get(args.secret_env, "")
    if not secret:
        print(
            f"edgemetrics serve: set {args.secret_env} to the shared signing secret",
            file=sys.stderr,
        )
        return 2
    serve(
        args.store,
        secret,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        privacy_keys=args.privacy_keys,
        duckdb_threads=args.duckdb_threads,
    )
    return 0


def serve(
    store_path: str,
    secret: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    log_level: str = "warning",
    privacy_keys: str | None = None,
    duckdb_threads: int = 1,
) -> None:
    """Run the collector in this process until it is stopped (SIGINT/SIGTERM)."""
    import uvicorn

    from edgemetrics.collector import CollectorSettings, create_collector_app
    from edgemetrics.retention import Retention
    from edgemetrics.store import EmbeddedStore

    # The collector owns the store: it enforces retention (90 days raw, 2 years rollups).
    store = EmbeddedStore(store_path, retention=Retention())
    # DuckDB's insert spends a third more CPU in two threads than in one; this process
    # only writes (readers go through the app that owns the dashboard).
    store.execute(f"SET threads = {int(duckdb_threads)}")
    privacy = None
    if privacy_keys:
        from edgemetrics.privacy import PrivacyStore

        privacy = PrivacyStore(privacy_keys)
    settings = CollectorSettings(secret=secret, privacy=privacy)
    app = create_collector_app(
        store,
        settings=settings,
        extra_routes=_extra_routes(store, settings),  # type: ignore[arg-type]
    )
    # pyarrow's first conversion of Python values imports pandas when it is installed (a
    # quarter of a second): pay it now, not in the first batch's insert.
    import pyarrow as pa

    pa.array([0.0])
    # Everything imported so far lives as long as the process: leave it out of the
    # collector's garbage collections, which then only look at what requests allocate.
    gc.collect()
    gc.freeze()
    # A request allocates a few thousand short-lived containers; collecting the young
    # generation every 700 of them (the default) spends more than the requests do.
    gc.set_threshold(50_000, 20, 20)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
    finally:
        store.close()
