"""`GET /models`, `POST /models/{version}/promote`, `POST /models/rollback` (operators)."""

from __future__ import annotations

from aiohttp import web

from gateway.keys import BUS, REGISTRY, SETTINGS
from shared.messages import ModelPromoted, encode


async def list_models(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    current = await registry.current_version()
    versions = [
        {"version": m.version, "created_at": m.created_at.isoformat(), "classes": m.classes,
         "backbone": m.backbone, "parent_version": m.parent_version, "metrics": m.metrics,
         "gate": getattr(m, "gate", None), "current": m.version == current}
        for m in await registry.versions()
    ]
    return web.json_response({"current": current, "versions": versions, "history": await registry.history()})


async def _announce(request: web.Request, version: str) -> web.Response:
    await request.app[BUS].broadcast(request.app[SETTINGS].models_exchange, encode(ModelPromoted(version=version)))
    return web.json_response({"current": version})


async def promote(request: web.Request) -> web.Response:
    version = request.match_info["version"]
    await request.app[REGISTRY].promote(version)
    return await _announce(request, version)


async def rollback(request: web.Request) -> web.Response:
    version = await request.app[REGISTRY].rollback()
    return await _announce(request, version)
