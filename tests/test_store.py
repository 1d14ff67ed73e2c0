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


def test_tables_have_aes_columns_plus_a_unique_event_id(store: EmbeddedStore) -> None:
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
