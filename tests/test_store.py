"""The embedded store: AE's table shape, batched inserts, each event stored once."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgemetrics.events import Purchase, View
from edgemetrics.layout import columns, decode, encode
from edgemetrics.store import DATASETS, EmbeddedStore


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStore:
    s = EmbeddedStore(tmp_path / "em.duckdb")
    yield s
    s.close()


def test_tables_have_aes_columns_plus_an_event_id(store: EmbeddedStore) -> None:
    for table in DATASETS:
        names = [
            r["column_name"]
            for r in store.query(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                "ORDER BY ordinal_position",
                [table],
            )
        ]
        assert names == [
            "event_id",
            "timestamp",
            "index1",
            *[f"blob{i}" for i in range(1, 21)],
            *[f"double{i}" for i in range(1, 21)],
            "_sample_interval",
        ]


def test_a_replayed_event_is_stored_once(store: EmbeddedStore) -> None:
    events = [View(content_id=f"v{i}", creator_id="c1") for i in range(300)]
    points = [encode(e) for e in events]
    assert store.write(points) == 300
    assert store.write(points[:100] + points[:100]) == 0
    assert store.query("SELECT count(*) AS n FROM edgemetrics_content")[0]["n"] == 300


def test_rows_read_back_decode_to_the_original_events(store: EmbeddedStore, tmp_path: Path) -> None:
    purchase = Purchase(
        amount_minor=1999,
        currency="JPY",
        transaction_id="tx-9",
        creator_id="c7",
        content_id="v3",
        authenticated=True,
    )
    store.write([encode(purchase)])
    store.close()
    reopened = EmbeddedStore(tmp_path / "em.duckdb")
    row = reopened.query("SELECT * FROM edgemetrics_commerce")[0]
    cols = columns("commerce")
    assert row[cols["amount_minor"]] == 1999 and row[cols["currency"]] == "JPY"
    assert row["index1"] == "c7" and row["_sample_interval"] == 1
    assert decode({**row, "dataset": "edgemetrics_commerce"}) == purchase
    reopened.close()


def test_unset_columns_read_as_ae_does(store: EmbeddedStore) -> None:
    store.write([encode(View(content_id="v1"))])
    row = store.query("SELECT blob20, double20, index1 FROM edgemetrics_content")[0]
    assert row == {"blob20": "", "double20": 0.0, "index1": ""}


def test_a_replay_weeks_later_among_new_events_is_stored_once(store: EmbeddedStore) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    old = [View(content_id="v1", timestamp=now - timedelta(days=20, minutes=i)) for i in range(5)]
    assert store.write([encode(e) for e in old]) == 5
    fresh = [View(content_id="v2", timestamp=now - timedelta(seconds=i)) for i in range(5)]
    # One write holding both the replayed old events and new ones: two time ranges.
    assert store.write([encode(e) for e in old + fresh]) == 5
    assert store.write([encode(e) for e in fresh]) == 0
    assert store.query("SELECT count(*) AS n FROM edgemetrics_content")[0]["n"] == 10


def test_an_event_id_twice_in_one_write_keeps_the_last(store: EmbeddedStore) -> None:
    first = View(content_id="first", creator_id="c1")
    second = View(content_id="second", creator_id="c1", event_id=first.event_id)
    assert store.write([encode(first), encode(second)]) == 1
    assert store.query("SELECT blob2 FROM edgemetrics_content") == [{"blob2": "second"}]


def test_a_store_made_with_the_unique_index_opens_and_keeps_working(tmp_path: Path) -> None:
    import duckdb

    from edgemetrics.store import _BLOB_COLUMNS, _DOUBLE_COLUMNS

    path = tmp_path / "old.duckdb"
    # The tables as stores made before the ingest rework have them.
    con = duckdb.connect(str(path))
    blobs = ", ".join(f"{c} VARCHAR NOT NULL DEFAULT ''" for c in _BLOB_COLUMNS)
    doubles = ", ".join(f"{c} DOUBLE NOT NULL DEFAULT 0" for c in _DOUBLE_COLUMNS)
    for table in DATASETS:
        con.execute(
            f"CREATE TABLE {table} (event_id VARCHAR PRIMARY KEY, timestamp TIMESTAMP NOT NULL, "
            f"index1 VARCHAR NOT NULL, {blobs}, {doubles}, "
            "_sample_interval UINTEGER NOT NULL DEFAULT 1)"
        )
    kept = encode(View(content_id="v1", creator_id="c1"))
    con.execute(
        "INSERT INTO edgemetrics_content (event_id, timestamp, index1, blob1, blob2) "
        "VALUES (?, ?, ?, 'view', 'v1')",
        [kept.event_id, kept.timestamp.replace(tzinfo=None), kept.index1],
    )
    con.close()

    store = EmbeddedStore(path)
    try:
        keys = store.query(
            "SELECT count(*) AS n FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'"
        )
        assert keys[0]["n"] == 0
        rows = store.query("SELECT event_id, blob2 FROM edgemetrics_content")
        assert rows == [{"event_id": kept.event_id, "blob2": "v1"}]
        assert store.write([kept]) == 0  # already there
        assert store.write([encode(View(content_id="v2"))]) == 1
    finally:
        store.close()
    reopened = EmbeddedStore(path)  # a second open finds nothing to rebuild
    assert reopened.query("SELECT count(*) AS n FROM edgemetrics_content")[0]["n"] == 2
    reopened.close()


def test_only_rows_no_newer_than_the_store_are_looked_up_for_replays(
    store: EmbeddedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime, timedelta

    import pyarrow as pa

    now = datetime.now(UTC)
    stored = [View(content_id="v1", timestamp=now - timedelta(minutes=5 - i)) for i in range(3)]
    assert store.write([encode(e) for e in stored]) == 3
    looked_up: list[int] = []
    register = type(store._cursor()).register

    def spy(cursor: object, name: str, table: pa.Table) -> object:
        if name == "_em_ids":
            looked_up.append(table.num_rows)
        return register(cursor, name, table)  # type: ignore[arg-type]

    monkeypatch.setattr(type(store._cursor()), "register", spy, raising=False)
    newer = [View(content_id="v2", timestamp=now + timedelta(seconds=i)) for i in range(4)]
    assert store.write([encode(e) for e in newer]) == 4
    assert looked_up == []  # every row is later than the newest stored: no lookup at all
    # A replay of the oldest stored event among new ones: only it is looked up, and left out.
    later = [View(content_id="v3", timestamp=now + timedelta(minutes=1))]
    assert store.write([encode(e) for e in [stored[0], *later]]) == 1
    assert looked_up == [1]
    assert store.query("SELECT count(*) AS n FROM edgemetrics_content")[0]["n"] == 8


def _const_row(**overrides: object) -> dict[str, object]:
    from edgemetrics.store import COLUMNS, Const

    cols: dict[str, object] = {
        name: Const(0.0 if name.startswith("double") else "") for name in COLUMNS
    }
    cols.update(event_id=["a" * 32, "b" * 32], timestamp=Const(1_700_000_000_000))
    cols.update(_sample_interval=Const(1), index1=Const("c1"))
    cols.update(overrides)
    return cols


def test_constant_columns_left_to_their_defaults_read_back_exactly(tmp_path: Path) -> None:
    from edgemetrics.store import Const

    store = EmbeddedStore(tmp_path / "em.duckdb")
    cols = _const_row(blob2=Const("x"), double1=Const(-0.0), double2=Const(2.5))
    assert store.write_columns("edgemetrics_content", cols, 2) == 2  # type: ignore[arg-type]
    rows = store.query(
        "SELECT blob1, blob2, double1, double2, double3, _sample_interval, index1 "
        "FROM edgemetrics_content ORDER BY event_id"
    )
    store.close()
    assert [tuple(r.values()) for r in rows] == [("", "x", -0.0, 2.5, 0.0, 1, "c1")] * 2
    assert str(rows[0]["double1"]) == "-0.0"  # the default 0 would have stored 0.0


def test_a_table_without_the_defaults_is_given_every_column(tmp_path: Path) -> None:
    import duckdb

    from edgemetrics.store import COLUMNS

    path = tmp_path / "em.duckdb"
    con = duckdb.connect(str(path))  # an older shape: no DEFAULTs at all
    types = {"event_id": "VARCHAR", "timestamp": "TIMESTAMP", "_sample_interval": "UINTEGER"}
    spec = ", ".join(
        f"{n} {types.get(n, 'DOUBLE' if n.startswith('double') else 'VARCHAR')} NOT NULL"
        for n in COLUMNS
    )
    con.execute(f"CREATE TABLE edgemetrics_content ({spec})")
    con.close()
    store = EmbeddedStore(path)
    assert store.write_columns("edgemetrics_content", _const_row(), 2) == 2  # type: ignore[arg-type]
    assert store.query("SELECT sum(_sample_interval) AS n FROM edgemetrics_content")[0]["n"] == 2
    store.close()
