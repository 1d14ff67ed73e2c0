"""The AE layout: the export the Worker imports, AE's limits, and the encode/decode round trip."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from strategies import any_event_dict

from edgemetrics import layout
from edgemetrics.client import Batch
from edgemetrics.events import EVENT_TYPES, FAMILIES, ApiCall, DbQuery, View, parse_event
from edgemetrics.sinks import encode_batch


def test_export_file_is_in_sync_with_the_declaration() -> None:
    assert layout.EXPORT_PATH.read_text() == layout.export_json(), (
        "worker/src/layout.json is stale: run `edgemetrics layout export`"
    )


def test_export_describes_every_type_and_family() -> None:
    exported = json.loads(layout.export_json())
    assert exported["version"] == layout.LAYOUT_VERSION
    assert set(exported["types"]) == set(EVENT_TYPES)
    assert set(exported["families"]) == set(FAMILIES)
    for family in exported["families"].values():
        assert len(family["blobs"]) <= 20 and len(family["doubles"]) <= 20
        assert family["blobs"][0] == "type"


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_fits_ae_column_limits(family: str) -> None:
    cols = layout.columns(family)
    assert sum(c.startswith("blob") for c in cols.values()) <= layout.MAX_BLOBS
    assert sum(c.startswith("double") for c in cols.values()) <= layout.MAX_DOUBLES


@settings(max_examples=400, deadline=None)
@given(any_event_dict)
def test_encode_then_decode_gives_back_the_same_event(data: dict) -> None:
    event = parse_event(data)
    point = layout.encode(event)
    assert len(point.index1.encode()) <= layout.MAX_INDEX_BYTES
    assert len(point.blobs) <= layout.MAX_BLOBS and len(point.doubles) <= layout.MAX_DOUBLES
    assert layout.decode(point) == event


def test_long_index_values_are_cut_to_96_bytes_and_stay_distinct() -> None:
    a = ApiCall(method="GET", route="/é" * 90 + "/a", status_code=200, duration_ms=1)
    b = ApiCall(method="GET", route="/é" * 90 + "/b", status_code=200, duration_ms=1)
    ia, ib = layout.encode(a).index1, layout.encode(b).index1
    assert len(ia.encode()) <= 96 and len(ib.encode()) <= 96
    assert ia != ib


def test_blob_limit_is_enforced_before_any_write_and_the_rest_of_the_batch_is_kept() -> None:
    huge = DbQuery(fingerprint="语" * 1000, duration_ms=1.0, database="d" * 64, service="s" * 64)
    # 3,000 bytes is within the limit; make the whole point exceed 16 KB with many blobs
    assert len(layout.encode(huge).blobs) > 0
    over = DbQuery.model_construct(**{**huge.model_dump(), "fingerprint": "语" * 6000})
    good = View(content_id="v1")
    points, rejected = encode_batch(
        Batch([good, over, good.model_copy(update={"event_id": "0" * 32})])
    )
    assert [p.event_id for p in points] == [good.event_id, "0" * 32]
    assert len(rejected) == 1 and "16384-byte limit" in rejected[0][1]
    with pytest.raises(layout.LayoutLimitError, match="blobs total"):
        layout.encode(over)


def test_creator_is_the_content_index_and_endpoint_the_platform_index() -> None:
    assert layout.encode(View(content_id="v1", creator_id="c-9")).index1 == "c-9"
    call = ApiCall(
        service="api", method="POST", route="/v1/buy/{id}", status_code=201, duration_ms=3
    )
    assert layout.encode(call).index1 == "api POST /v1/buy/{id}"


def test_the_layout_tables_in_docs_match_the_declaration() -> None:
    doc = (layout.EXPORT_PATH.parents[2] / "docs" / "events.md").read_text()
    generated = doc.split("<!-- generated: edgemetrics layout docs -->\n")[1]
    assert generated.split("<!-- end generated -->")[0] == layout.markdown(), (
        "docs/events.md is stale: paste `edgemetrics layout docs` between its markers"
    )
