"""The ``edgemetrics`` command. Each subcommand lives in its own module.

>>> main(["layout", "check"]) in (0, 1)
layout export is up to date
True
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules exposing add_command(subparsers); imported lazily so each brings its own extras.
COMMANDS: tuple[str, ...] = (
    "edgemetrics.cost",
    "edgemetrics.demo.command",
    "edgemetrics.layout_command",
    "edgemetrics.privacy_command",
    "edgemetrics.query.rollup",
    "edgemetrics.serve_command",
    "edgemetrics.spool_command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgemetrics", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(name).add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
