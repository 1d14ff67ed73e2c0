"""Run the local collector on a port (a real uvicorn process for the delivery tests), the
way ``edgemetrics serve`` runs it."""

from __future__ import annotations

import os
import sys

from edgemetrics.serve_command import serve

if __name__ == "__main__":
    store_path, port = sys.argv[1], int(sys.argv[2])
    serve(store_path, os.environ["EDGEMETRICS_SECRET"], port=port, log_level="error")
