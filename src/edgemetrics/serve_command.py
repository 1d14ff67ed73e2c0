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
    import uvicorn

    from edgemetrics.collector import CollectorSettings, create_collector_app
    from edgemetrics.store import EmbeddedStore

    secret = os.environ.get(args.secret_env, "")
    if not secret:
        print(
            f"edgemetrics serve: set {args.secret_env} to the shared signing secret",
            file=sys.stderr,
        )
        return 2
    from edgemetrics.retention import Retention

    # The collector owns the store: it enforces retention (90 days raw, 2 years rollups).
    store = EmbeddedStore(args.store, retention=Retention())
    privacy = None
    if args.privacy_keys:
        from edgemetrics.privacy import PrivacyStore

        privacy = PrivacyStore(args.privacy_keys)
    settings = CollectorSettings(secret=secret, privacy=privacy)
    app = create_collector_app(
        store,
        settings=settings,
        extra_routes=_extra_routes(store, settings),  # type: ignore[arg-type]
    )
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        store.close()
    return 0
