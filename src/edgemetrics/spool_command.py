"""``edgemetrics spool status``: what is waiting in a spool directory and what was dropped.

>>> import argparse, tempfile
>>> parser = argparse.ArgumentParser(prog="edgemetrics")
>>> add_command(parser.add_subparsers())
>>> args = parser.parse_args(["spool", "status", "--dir", tempfile.mkdtemp()])
>>> args.func(args)  # doctest: +ELLIPSIS
spool: .../spool.sqlite3
  waiting:   0 batches, 0 events (0 purchases/refunds), 0 in flight
  size:      0 bytes, oldest 0.0 s
  dropped:   0 over the size bound, 0 past the age bound
0
"""

from __future__ import annotations

import argparse
import dataclasses

import orjson


def add_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``spool status`` on the CLI's subparsers."""
    parser = subparsers.add_parser("spool", help="inspect the exporter's disk spool")
    actions = parser.add_subparsers(dest="spool_action", required=True)
    status = actions.add_parser("status", help="depth, age, size and drops of a spool")
    status.add_argument("--dir", required=True, help="the spool directory")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=status_command)


def status_command(args: argparse.Namespace) -> int:
    """Print the spool's state; exit 1 when a corrupt spool had to be quarantined."""
    from edgemetrics.spool import Spool

    spool = Spool(args.dir)
    try:
        stats = spool.stats()
    finally:
        spool.close()
    if args.json:
        print(orjson.dumps(dataclasses.asdict(stats), option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"spool: {stats.path}")
        print(
            f"  waiting:   {stats.batches} batches, {stats.events} events "
            f"({stats.critical_events} purchases/refunds), {stats.in_flight} in flight"
        )
        print(f"  size:      {stats.bytes} bytes, oldest {stats.oldest_age_s:.1f} s")
        print(
            f"  dropped:   {stats.dropped_spool_full} over the size bound, "
            f"{stats.dropped_expired} past the age bound"
        )
        for path in stats.quarantined:
            print(f"  quarantined (corrupt, set aside): {path}")
    return 1 if stats.quarantined else 0
