"""Runs the shared ingest vectors through the Python side (used by the tests and regenerate.py)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.testclient import TestClient

from edgemetrics.collect import CollectSettings, routes
from edgemetrics.enrich import MemoryVisitorStore
from edgemetrics.events import InvalidEvent, parse_event
from edgemetrics.layout import DataPoint, LayoutLimitError, encode


def point_json(point: DataPoint) -> dict[str, Any]:
    return {
        "dataset": point.dataset,
        "index1": point.index1,
        "blobs": list(point.blobs),
        "doubles": list(point.doubles),
    }


def errors_json(errors: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    # Messages differ between pydantic and the Worker; the field and the rule must not.
    return [{"field": f, "rule": r} for f, r in sorted(set(errors))]


def run_batch_events(events: list[Any]) -> dict[str, Any]:
    """What /v1/batch must make of these events: points in order, and rejections."""
    points: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for index, raw in enumerate(events):
        try:
            if not isinstance(raw, dict):
                raise InvalidEvent([("event", "type", "must be a JSON object")])
            point = encode(parse_event(raw))
        except InvalidEvent as exc:
            rejected.append(
                {"index": index, "errors": errors_json((f, r) for f, r, _ in exc.errors)}
            )
            continue
        except LayoutLimitError:
            rejected.append({"index": index, "errors": errors_json([("event", "blob_bytes")])})
            continue
        points.append({"index": index, **point_json(point)})
    return {"points": points, "rejected": rejected}


class ListStore:
    """Collects written points in memory."""

    def __init__(self) -> None:
        self.points: list[DataPoint] = []

    def write(self, points: Iterable[DataPoint]) -> int:
        batch = list(points)
        self.points.extend(batch)
        return len(batch)


def run_collect_requests(
    salts: dict[str, str],
    requests: list[dict[str, Any]],
    allowed: tuple[str, ...] = ("https://app.example.com",),
) -> list[dict[str, Any]]:
    """Send each vector request to the Python /v1/collect route; return what each produced."""
    store = ListStore()
    clock = {"now": 0}
    settings = CollectSettings(
        allowed_origins=allowed,
        trust_proxy_headers=True,
        visitors=MemoryVisitorStore(salts),
        clock=lambda: clock["now"],
    )
    client = TestClient(Starlette(routes=routes(store, settings)))
    results = []
    for req in requests:
        clock["now"] = req["now"]
        headers = dict(req["headers"])
        headers["cf-connecting-ip"] = req["ip"]
        for key, header in (("country", "cf-ipcountry"), ("city", "cf-ipcity")):
            if key in req["cf"]:
                headers[header] = req["cf"][key]
        before = len(store.points)
        response = client.post("/v1/collect", content=req["body"].encode(), headers=headers)
        result: dict[str, Any] = {"status": response.status_code}
        if response.status_code == 200:
            body = response.json()
            result["rejected"] = [
                {
                    "index": r["index"],
                    "errors": errors_json((e["field"], e["rule"]) for e in r["errors"]),
                }
                for r in body["rejected"]
            ]
        elif response.content:
            result["error"] = json.loads(response.content)["error"]["code"]
        result["points"] = [point_json(p) for p in store.points[before:]]
        results.append(result)
    return results
