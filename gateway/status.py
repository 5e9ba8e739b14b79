"""`GET /status`: what the UI's Status section shows, in one answer (open, read-only).

Uptime of the gateway, of each live worker and of each ingest and trainer instance (from their
heartbeats), the broker and the store, every queue's depth and consumers (sampled at most once a
second, gateway/queue_watch.py), the taxonomy against what
the current model predicts, and the Grafana link when one is configured.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from pydantic import BaseModel, Field

from gateway.keys import BUS, REGISTRY, SETTINGS, STORE, WORKERS, uptime_s
from gateway.queue_watch import QUEUE_WATCH
from shared.errors import DermaScanError
from shared.taxonomy import CLASSES


class QueueSeen(BaseModel):
    """One queue as the broker reports it."""

    name: str = Field(description="The queue.")
    role: str = Field(description="What it carries: predict, ingest or train.")
    messages: int | None = Field(description="Messages waiting; None when the broker did not answer.")
    consumers: int | None = Field(description="Consumers attached (workers, the ingest or trainer service).")


class WorkerLive(BaseModel):
    """One inference worker heard from recently."""

    id: str = Field(description="The worker's id.")
    model_version: str | None = Field(description="The version it serves; None while loading.")
    engine: str | None = Field(description="litert or tensorflow; None while loading or for an older worker.")
    uptime_s: float | None = Field(description="Seconds since the worker started, from its heartbeat.")
    heard_s_ago: float = Field(description="Seconds since its last heartbeat.")


class ServiceLive(BaseModel):
    """One ingest or trainer service instance heard from recently."""

    service: str = Field(description="ingest_service or trainer_service.")
    id: str = Field(description="The instance's id (host and process).")
    uptime_s: float = Field(description="Seconds since the instance started, from its heartbeat.")
    heard_s_ago: float = Field(description="Seconds since its last heartbeat.")


class ClassCoverage(BaseModel):
    """The taxonomy against the current model."""

    model_version: str | None = Field(description="The current model, if any.")
    predicted: list[str] = Field(description="Classes the current model predicts.")
    needs_data: list[str] = Field(description="Classes of the taxonomy the model does not predict yet.")


class Status(BaseModel):
    """`GET /status`."""

    status: str = Field(description="'ok' when broker, store and a serving worker are up, else 'degraded'.")
    gateway_uptime_s: float = Field(description="Seconds since this gateway started.")
    broker_connected: bool = Field(description="Whether the gateway reaches the broker.")
    store_url: str = Field(description="The object store.")
    store_reachable: bool = Field(description="Whether the store answered a ping within 2 s.")
    workers: list[WorkerLive] = Field(description="Live inference workers, by id.")
    services: list[ServiceLive] = Field(description="Live ingest and trainer instances, by service and id.")
    queues: list[QueueSeen] = Field(description="The predict, ingest and train queues.")
    classes: ClassCoverage
    grafana_url: str | None = Field(description="`DERMASCAN_GRAFANA_URL`, when set.")


async def _queues(request: web.Request) -> list[QueueSeen]:
    settings = request.app[SETTINGS]
    sampled = await request.app[QUEUE_WATCH].sample()
    seen = []
    for role, name in (("predict", settings.predict_queue), ("ingest", settings.ingest_queue),
                       ("train", settings.train_queue)):
        stats = sampled.get(name)
        seen.append(QueueSeen(name=name, role=role, messages=stats.messages if stats else None,
                              consumers=stats.consumers if stats else None))
    return seen


async def class_coverage(request: web.Request) -> ClassCoverage:
    """The taxonomy against the current model (GET /status and GET /classes); no model or an
    unreachable registry: nothing predicted."""
    registry = request.app[REGISTRY]
    current, predicted = None, []
    try:
        current = await registry.current_version()
        if current is not None:
            predicted = (await registry.manifest(current)).classes
    except DermaScanError:
        pass
    return ClassCoverage(model_version=current, predicted=predicted,
                         needs_data=[c for c in CLASSES if c not in predicted])


async def status(request: web.Request) -> web.Response:
    """The Status section's data. Never fails for a dependency that is down: it says so."""
    app = request.app
    try:
        store_ok = await asyncio.wait_for(app[STORE].ping(), 2)
    except Exception:  # noqa: BLE001 - any failure of the ping means unreachable, said in the answer
        store_ok = False
    now = time.time()
    workers = [WorkerLive(id=w.worker_id, model_version=w.model_version, engine=w.engine,
                          uptime_s=round(now - w.started_at, 1) if w.started_at else None,
                          heard_s_ago=round(max(0.0, now - w.sent_at), 1))
               for w in app[WORKERS].live()]
    services = [ServiceLive(service=s.service, id=s.instance_id,
                            uptime_s=round(max(0.0, now - s.started_at), 1),
                            heard_s_ago=round(max(0.0, now - s.sent_at), 1))
                for s in app[WORKERS].services()]
    broker = app[BUS].connected
    body = Status(
        status="ok" if broker and store_ok and any(w.model_version for w in workers) else "degraded",
        gateway_uptime_s=round(uptime_s(app), 1), broker_connected=broker, store_url=app[STORE].url,
        store_reachable=store_ok, workers=workers, services=services, queues=await _queues(request),
        classes=await class_coverage(request), grafana_url=app[SETTINGS].grafana_url)
    return web.json_response(body.model_dump(mode="json"))
