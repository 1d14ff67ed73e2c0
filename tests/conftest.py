"""Shared fixtures; the helpers they use live in support.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import Captured, Collector, free_port

import edgemetrics
from edgemetrics.sinks import MemorySink

# Apps in tests/apps/ are imported by the servers the tests start, not by pytest.
collect_ignore = ["apps"]


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(tmp_path / "store.duckdb", free_port())
    yield c
    c.stop()


@pytest.fixture
def captured() -> Iterator[Captured]:
    sink = MemorySink()
    edgemetrics.configure(sink=sink, flush_interval=0.05)
    yield Captured(sink)
    edgemetrics.shutdown()
