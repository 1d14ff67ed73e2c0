"""``edgemetrics layout``: print, export or check the AE layout JSON the Worker imports."""

from __future__ import annotations

import argparse
import sys

from edgemetrics import layout


def add_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("layout", help="the AE layout (fields to index/blobs/doubles)")
    parser.add_argument(
        "action",
        choices=["show", "export", "check"],
        help="show: print it; export: rewrite worker/src/layout.json; check: fail if stale",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    text = layout.export_json()
    if args.action == "show":
        sys.stdout.write(text)
        return 0
    if args.action == "docs":
        sys.stdout.write(layout.markdown())
        return 0
    if args.action == "export":
        layout.EXPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
        layout.EXPORT_PATH.write_text(text)
        print(f"wrote {layout.EXPORT_PATH}")
        return 0
    current = layout.EXPORT_PATH.read_text() if layout.EXPORT_PATH.exists() else ""
    if current != text:
        print(f"{layout.EXPORT_PATH} is stale: run `edgemetrics layout export`", file=sys.stderr)
        return 1
    print("layout export is up to date")
    return 0
