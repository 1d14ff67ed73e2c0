from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgemetrics.store import DATASETS, EmbeddedStore


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStore]:
    store = EmbeddedStore(tmp_path_factory.mktemp("q") / "em.duckdb")
    yield store
    store.close()


def reset(store: EmbeddedStore) -> None:
    for table in DATASETS:
        store.execute(f"DELETE FROM {table}")


import os

from hypothesis import Phase, settings

# EM_NO_SHRINK=1: report the first failing example as found (debugging aid).
settings.register_profile("noshrink", phases=[Phase.explicit, Phase.reuse, Phase.generate])
if os.environ.get("EM_NO_SHRINK"):
    settings.load_profile("noshrink")
