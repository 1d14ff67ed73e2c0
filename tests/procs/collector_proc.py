"""Run the local collector on a port (a real uvicorn process for the delivery tests)."""

from __future__ import annotations

import os
import sys

import uvicorn

from edgemetrics.collector import CollectorSettings, create_collector_app
from edgemetrics.store import EmbeddedStore

if __name__ == "__main__":
    store_path, port = sys.argv[1], int(sys.argv[2])
    store = EmbeddedStore(store_path)
    settings = CollectorSettings(secret=os.environ["EDGEMETRICS_SECRET"])
    app = create_collector_app(store, settings=settings)
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="error")
    finally:
        store.close()
