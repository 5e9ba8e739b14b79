"""`/health`, `/livez`, `/readyz` and `/classes`."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.keys import BUS, METRICS, SETTINGS, STORE, WORKERS, uptime_s
from gateway.status import class_coverage
from shared.errors import DermaScanError
from shared.taxonomy import CLASSES


async def _store_ok(request: web.Request) -> bool:
    try:
        return await asyncio.wait_for(request.app[STORE].ping(), 2)
    except Exception:  # noqa: BLE001 - /health reports any failure of the store as "down", never raises
        return False


async def _queue(request: web.Request) -> dict[str, int] | None:
    app = request.app
    name = app[SETTINGS].predict_queue
    try:
        stats = await asyncio.wait_for(app[BUS].queue_stats(name), 2)
    except (TimeoutError, DermaScanError):
        return None
    app[METRICS].queue_depth.labels(name).set(stats.messages)
    app[METRICS].queue_consumers.labels(name).set(stats.consumers)
    return {"messages": stats.messages, "consumers": stats.consumers}


async def health(request: web.Request) -> web.Response:
    """Everything an operator asks first: uptime, dependencies, workers and their models."""
    app = request.app
    workers = app[WORKERS].live()
    app[METRICS].workers.set(len(workers))
    broker, store = app[BUS].connected, await _store_ok(request)
    serving = [w for w in workers if w.model_version]
    body = {
        "status": "ok" if broker and store and serving else "degraded",
        "uptime_s": round(uptime_s(app), 3),
        "broker": {"connected": broker, "predict_queue": await _queue(request) if broker else None},
        "store": {"url": app[STORE].url, "reachable": store},
        "workers": [{"id": w.worker_id, "model_version": w.model_version} for w in workers],
        "model_versions": sorted({w.model_version for w in serving if w.model_version}),
        "classes": list(CLASSES),
    }
    return web.json_response(body)


async def livez(_: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    """200 only when the broker, the store and a model-serving worker are all reachable."""
    app = request.app
    problems = []
    if not app[BUS].connected:
        problems.append("broker unreachable")
    if not await _store_ok(request):
        problems.append("object store unreachable")
    if not app[WORKERS].serving():
        problems.append("no inference worker is serving a model")
    if problems:
        return web.json_response({"status": "not_ready", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


async def classes(request: web.Request) -> web.Response:
    """The taxonomy, and which of its classes the current model predicts."""
    coverage = await class_coverage(request)
    return web.json_response({
        "taxonomy": list(CLASSES),
        "model_version": coverage.model_version,
        "predicted": coverage.predicted,
        "not_yet_predicted": coverage.needs_data,
    })
