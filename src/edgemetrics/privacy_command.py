"""``edgemetrics privacy``: erasure, opt-out, key rotation, retention and CSV export.

* ``privacy delete --user ID --keys K [--store S] [--spool D]``: remove the user's events
  from the store, the spool and the rollups, destroy their secret, report per place.
* ``privacy opt-out --user ID --keys K`` / ``privacy opt-in``: the objection registry.
* ``privacy keys --keys K [--rotate] [--destroy-retired]``: list, rotate, retire keys.
* ``privacy export --store S --before DATE --out DIR``: CSV of the rows older than DATE.
* ``privacy retention --store S [--export-dir DIR]``: apply 90 days raw / 2 years rollups.

The store must not be open in another process (DuckDB's one-writer rule): stop
``edgemetrics serve`` first, or call :func:`edgemetrics.erasure.erase_user` inside it.

>>> import argparse, os, tempfile
>>> parser = argparse.ArgumentParser(prog="edgemetrics")
>>> add_command(parser.add_subparsers())
>>> keys = os.path.join(tempfile.mkdtemp(), "keys.sqlite3")
>>> args = parser.parse_args(["privacy", "opt-out", "--user", "u-1", "--keys", keys])
>>> args.func(args)
user opted out: their events are dropped from now on
0
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime


def add_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``privacy`` and its actions on the CLI's subparsers."""
    parser = subparsers.add_parser("privacy", help="erasure, opt-out, keys and retention")
    actions = parser.add_subparsers(dest="privacy_action", required=True)

    delete = actions.add_parser("delete", help="erase one user's events and shred their key")
    delete.add_argument("--user", required=True, help="the user id as the host app knows it")
    delete.add_argument("--keys", required=True, help="the privacy key store (SQLite file)")
    delete.add_argument("--store", help="the embedded store (DuckDB file)")
    delete.add_argument("--spool", help="the exporter's spool directory")
    delete.add_argument(
        "--no-compact",
        action="store_true",
        help="skip rewriting the store file (deleted rows' bytes then stay until reused)",
    )
    delete.set_defaults(func=delete_command)

    for name, help_text in (
        ("opt-out", "record a user's objection: their events are dropped"),
        ("opt-in", "withdraw a user's opt-out"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("--user", required=True, help="the user id as the host app knows it")
        action.add_argument("--keys", required=True, help="the privacy key store (SQLite file)")
        action.set_defaults(func=consent_command)

    keys = actions.add_parser("keys", help="list the pseudonymisation keys; rotate or retire")
    keys.add_argument("--keys", required=True, help="the privacy key store (SQLite file)")
    keys.add_argument("--rotate", action="store_true", help="retire the active key, make one")
    keys.add_argument(
        "--destroy-retired",
        type=float,
        metavar="DAYS",
        help="destroy keys retired more than DAYS days ago (policy: 90)",
    )
    keys.set_defaults(func=keys_command)

    export = actions.add_parser("export", help="write rows older than a date to CSV")
    export.add_argument("--store", required=True, help="the embedded store (DuckDB file)")
    export.add_argument("--before", required=True, type=_date, help="YYYY-MM-DD (UTC)")
    export.add_argument("--out", required=True, help="directory for the CSV files")
    export.set_defaults(func=export_command)

    retention = actions.add_parser("retention", help="delete expired rows now")
    retention.add_argument("--store", required=True, help="the embedded store (DuckDB file)")
    retention.add_argument("--export-dir", help="write the expiring rows to CSV here first")
    retention.add_argument("--raw-days", type=int, default=90)
    retention.add_argument("--rollup-days", type=int, default=730)
    retention.set_defaults(func=retention_command)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--before: {text!r} is not a YYYY-MM-DD date") from None


def _open_store(path: str) -> object:
    import duckdb

    from edgemetrics.store import EmbeddedStore

    try:
        return EmbeddedStore(path)
    except duckdb.IOException as exc:
        print(
            f"edgemetrics privacy: cannot open the store {path} ({exc}). It is probably open "
            "in another process (edgemetrics serve): stop it, or run the erasure inside it.",
            file=sys.stderr,
        )
        return None


def delete_command(args: argparse.Namespace) -> int:
    """Erase one user everywhere and print what was removed per place."""
    from edgemetrics.erasure import compact_store, erase_user
    from edgemetrics.privacy import PrivacyStore
    from edgemetrics.store import EmbeddedStore

    store = None
    if args.store:
        opened = _open_store(args.store)
        if opened is None:
            return 2
        assert isinstance(opened, EmbeddedStore)
        store = opened
    keys = PrivacyStore(args.keys)
    try:
        report = erase_user(args.user, keys=keys, store=store, spool=args.spool)
    finally:
        keys.close()
        if store is not None:
            store.close()
    if store is not None and not args.no_compact:
        compact_store(args.store)
        report.notes.append("store file rewritten: deleted rows' bytes are gone from it")
    for line in report.lines():
        print(line)
    return 0


def consent_command(args: argparse.Namespace) -> int:
    """Record or withdraw an opt-out."""
    from edgemetrics.privacy import PrivacyStore

    keys = PrivacyStore(args.keys)
    try:
        if args.privacy_action == "opt-out":
            keys.opt_out(args.user)
            print("user opted out: their events are dropped from now on")
        else:
            keys.opt_in(args.user)
            print("opt-out withdrawn: the user's events are recorded again")
    finally:
        keys.close()
    return 0


def keys_command(args: argparse.Namespace) -> int:
    """List keys (ids and dates only), after rotating or destroying when asked."""
    from edgemetrics.privacy import DAY, PrivacyStore

    keys = PrivacyStore(args.keys)
    try:
        if args.rotate:
            print(f"rotated: {keys.rotate()} now makes pseudonyms")
        if args.destroy_retired is not None:
            gone = keys.destroy_retired(args.destroy_retired * DAY)
            print(f"destroyed: {', '.join(gone) if gone else 'none'}")
        for info in keys.key_list():
            created = datetime.fromtimestamp(info.created, UTC).date().isoformat()
            print(f"{info.kid}\t{info.state}\tcreated {created}")
    finally:
        keys.close()
    return 0


def export_command(args: argparse.Namespace) -> int:
    """Write the rows older than ``--before`` to CSV, one file per table."""
    from edgemetrics.retention import export_csv
    from edgemetrics.store import EmbeddedStore

    store = _open_store(args.store)
    if store is None:
        return 2
    assert isinstance(store, EmbeddedStore)
    try:
        written = export_csv(store, args.before, args.out, rollups_before=args.before)
    finally:
        store.close()
    if not written:
        print(f"nothing older than {args.before.isoformat()}")
    for table, (path, rows) in sorted(written.items()):
        print(f"{table}: {rows} row(s) -> {path}")
    return 0


def retention_command(args: argparse.Namespace) -> int:
    """Apply the retention policy now (the store's owner also does it hourly)."""
    from edgemetrics.retention import enforce_retention
    from edgemetrics.store import EmbeddedStore

    store = _open_store(args.store)
    if store is None:
        return 2
    assert isinstance(store, EmbeddedStore)
    try:
        report = enforce_retention(
            store,
            raw_days=args.raw_days,
            rollup_days=args.rollup_days,
            export_dir=args.export_dir,
        )
    finally:
        store.close()
    for table, n in sorted(report.deleted.items()):
        print(f"{table}: {n} expired row(s) deleted")
    for table, path in sorted(report.exported.items()):
        print(f"{table}: exported to {path} first")
    return 0
