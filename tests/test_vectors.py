"""The shared ingest vectors, run against the Python side (npm test runs them on the Worker)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from vector_runner import run_batch_events, run_collect_requests

VECTORS = sorted((Path(__file__).parent / "vectors").glob("*.json"))


def test_both_kinds_of_vectors_exist() -> None:
    names = [p.name for p in VECTORS]
    assert any(n.startswith("batch_") for n in names)
    assert any(n.startswith("collect_") for n in names)


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_vector(path: Path) -> None:
    vector: dict[str, Any] = json.loads(path.read_text())
    if vector["kind"] == "batch":
        assert run_batch_events(vector["events"]) == vector["expect"]
    else:
        results = run_collect_requests(
            vector["salts"], vector["requests"], tuple(vector["allowed_origins"])
        )
        for i, (req, got) in enumerate(zip(vector["requests"], results, strict=True)):
            assert got == req["expect"], f"{path.name} request {i}"


def test_vectors_cover_rejections_coercions_and_uniqueness() -> None:
    """The vectors exercise what parity is most likely to break on."""
    rules = set()
    doubles = set()
    for path in VECTORS:
        vector = json.loads(path.read_text())
        if vector["kind"] == "batch":
            rules |= {e["rule"] for r in vector["expect"]["rejected"] for e in r["errors"]}
        else:
            for req in vector["requests"]:
                rules |= {e["rule"] for r in req["expect"].get("rejected", []) for e in r["errors"]}
                # unique_view, new_visitor, new_session are content doubles 7..9
                doubles |= {tuple(p["doubles"][6:9]) for p in req["expect"]["points"]}
    assert {"missing", "extra_forbidden", "value_error", "browser_type", "browser_field"} <= rules
    assert {"string_pattern_mismatch", "int_from_float", "bool_parsing", "float_parsing"} <= rules
    assert {(1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)} <= doubles
    # Consent mode: a malformed or second browser session id, a new session without a new
    # visitor (another tab), a new visitor without a new session (the tab changed network).
    assert "browser_session" in rules
    assert {(1.0, 0.0, 1.0), (0.0, 1.0, 0.0)} <= doubles
