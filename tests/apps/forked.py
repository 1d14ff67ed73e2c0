"""Apps served by real multi-process servers in test_servers.py.

Configured at import: under ``gunicorn --preload`` that happens once in the master,
before the workers fork; under ``uvicorn --workers`` each spawned worker imports it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgemetrics.integrations.fastapi import instrument
from edgemetrics.integrations.flask import init_app
from fastapi import FastAPI
from flask import Flask
from loopback import JsonPostSink

import edgemetrics

edgemetrics.configure(sink=JsonPostSink(int(os.environ["EM_RECEIVER_PORT"])), flush_interval=0.1)

flask_app = Flask("forked")


@flask_app.get("/who/<int:n>")
def who(n: int) -> dict[str, int]:
    return {"pid": os.getpid(), "n": n}


init_app(flask_app, service="gunicorn")

fastapi_app = FastAPI()


@fastapi_app.get("/who/{n}")
async def who_async(n: int) -> dict[str, int]:
    return {"pid": os.getpid(), "n": n}


instrument(fastapi_app, service="uvicorn")
