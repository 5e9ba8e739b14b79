"""Wiring of the gateway: `create_app(settings)` returns the aiohttp application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry

from gateway import audit, data_views, events, health, jobs, models, status, thumbnails, ui, v2
from gateway.audit import AUDIT, AuditLog
from gateway.auth import AUTH_LIMITS, TOKENS, AuthLimits, guard
from gateway.bulk import upload_bulk
from gateway.catalog_view import CATALOG_VIEW, CatalogView
from gateway.errors import error_middleware
from gateway.keys import BUS, JOBS, METRICS, REGISTRY, SETTINGS, STARTED, STORE, WORKERS
from gateway.limits import UPLOAD_BYTES, ByteBudget, encoding_middleware, server_options
from gateway.metrics import GatewayMetrics
from gateway.openapi import VERSION_PATTERN, openapi
from gateway.origins import cors_middleware, origin_middleware
from gateway.predict import IN_FLIGHT, InFlight, predict
from gateway.protocol_log import protocol_log
from gateway.queue_watch import QUEUE_WATCH, QueueWatch
from gateway.ratelimit import RATE_LIMITS, RateLimits
from gateway.retention import sweep_forever
from gateway.settings import GatewaySettings
from gateway.tokens import Role, TokenBook
from gateway.workers import WorkerDirectory
from shared.bus import MessageBus, connect_bus
from shared.bus.topology import Topology, declare
from shared.errors import BadRequest
from shared.jobs import JobStore
from shared.metrics import metrics_handler
from shared.registry import ModelRegistry
from shared.store import ObjectStore, open_store_for

log = logging.getLogger(__name__)


async def _join_broker(app: web.Application) -> None:
    """Declare the queues and listen to worker heartbeats once the broker is reachable, then
    keep the queue-depth gauges fresh."""
    bus, settings = app[BUS], app[SETTINGS]
    topology = Topology.of(settings)
    while True:
        try:
            await bus.wait_connected()
            await declare(bus, *topology.queues)
            await bus.subscribe(topology.status_exchange, app[WORKERS].on_status)
            break
        except Exception as exc:  # noqa: BLE001 - the broker went away mid-way: join again
            log.warning("joining the broker failed (%s); retrying", exc)
            await asyncio.sleep(0.5)
    metrics = app[METRICS]
    while True:
        for queue, stats in (await app[QUEUE_WATCH].sample()).items():
            if stats is not None:
                metrics.queue_depth.labels(queue).set(stats.messages)
                metrics.queue_consumers.labels(queue).set(stats.consumers)
        metrics.workers.set(len(app[WORKERS].live()))
        await asyncio.sleep(settings.queue_poll_s)


def _resources(bus: MessageBus | None, store: ObjectStore | None):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        own_bus = bus or await connect_bus(settings.broker_url,
                                           publish_timeout_s=settings.broker_publish_timeout_s,
                                           heartbeat_s=settings.broker_heartbeat_s)
        own_store = store or await open_store_for(settings)
        app[BUS], app[STORE] = own_bus, own_store
        app[REGISTRY] = ModelRegistry(own_store)
        app[JOBS] = JobStore(own_store, retention_s=settings.job_retention_s)
        app[AUDIT] = AuditLog(own_store, retention_s=settings.audit_retention_s)
        app[AUDIT].start()
        app[CATALOG_VIEW] = CatalogView(own_store, settings.data_views_max_age_s)
        app[QUEUE_WATCH] = QueueWatch(own_bus, [queue.name for queue in Topology.of(settings).queues])
        joining = asyncio.create_task(_join_broker(app))
        sweeping = asyncio.create_task(sweep_forever(app[JOBS], app[AUDIT]), name="retention-sweep")
        yield
        for task in (joining, sweeping):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await app[AUDIT].close()  # the refusals it still counts, written before the store closes
        if bus is None:
            await own_bus.close()
        if store is None:
            await own_store.close()

    return ctx


_VERSION = re.compile(VERSION_PATTERN)


def version_checked(handler: Handler) -> Handler:
    """`handler` behind a check of the route's `{version}`: letters, digits, `_`, `.` and `-`,
    at most 128, and not a registry file's name (`current.json`); raises BadRequest otherwise."""

    async def checked(request: web.Request) -> web.StreamResponse:
        version = request.match_info["version"]
        if not _VERSION.fullmatch(version) or version.endswith(".json"):
            raise BadRequest(f"{version[:80]!r} is not a version name: letters, digits, '_', '.' and '-', "
                             "at most 128 (GET /models lists them)", code="invalid_version")
        return await handler(request)

    return checked


def create_app(
    settings: GatewaySettings,
    *,
    bus: MessageBus | None = None,
    store: ObjectStore | None = None,
    registry: CollectorRegistry | None = None,
) -> web.Application:
    """The gateway application. A `bus` or `store` passed in is shared, not closed, by it
    (the embedded mode); otherwise it opens its own from `settings`. Raises ValueError or
    OSError when the token file of `settings` is malformed or unreadable.

    Open to anyone (at an allowed host, gateway/origins.py): the UI, health, /classes, /metrics,
    /openapi.json, the catalog's counts (`GET /data/summary`), `GET /models`, `GET /jobs/{id}` and
    (by default) /predict. The catalog's images (`GET /data/samples`, `/data/thumbnails/*`) need
    the `view` role; uploads `contribute`; retraining, promotion, rollback, cancelling a
    job and the audit log `operator` (gateway/auth.py)."""
    registry = registry or CollectorRegistry()
    metrics = GatewayMetrics(registry)
    app = web.Application(
        middlewares=[metrics.middleware, cors_middleware, error_middleware, origin_middleware,
                     encoding_middleware],
        client_max_size=settings.max_file_bytes + 1024 * 1024,
        handler_args={**server_options(settings), "logger": protocol_log()},
    )
    app[SETTINGS] = settings
    app[TOKENS] = TokenBook.from_settings(settings)
    if not app[TOKENS]:
        log.warning("no API tokens are configured: uploads, retraining and promotion will be refused "
                    "(set DERMASCAN_OPERATOR_TOKEN or DERMASCAN_API_TOKENS_FILE)")
    app[METRICS] = metrics
    app[WORKERS] = WorkerDirectory(settings.worker_ttl_factor)
    app[IN_FLIGHT] = InFlight(settings.max_in_flight)
    app[UPLOAD_BYTES] = ByteBudget(settings.max_upload_bytes_in_flight)
    app[RATE_LIMITS] = RateLimits(settings)
    app[AUTH_LIMITS] = AuthLimits(settings)
    app[STARTED] = time.monotonic()
    app.cleanup_ctx.append(_resources(bus, store))
    events.setup(app)
    app[thumbnails.THUMBNAILS] = thumbnails.Thumbnails()
    app.router.add_get("/", ui.index)
    app.router.add_get("/static/{name}", ui.asset)
    app.router.add_get("/model-card", ui.model_card)
    app.router.add_get("/status", status.status)
    app.router.add_get("/data/summary", data_views.data_summary)
    app.router.add_get("/data/samples", guard(Role.VIEW, data_views.data_samples))
    app.router.add_get("/data/thumbnails/{sha256}", guard(Role.VIEW, thumbnails.thumbnail))
    app.router.add_post("/predict", guard(Role.PREDICT, predict))
    app.router.add_get("/health", health.health)
    app.router.add_get("/livez", health.livez)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/classes", health.classes)
    app.router.add_post("/upload-bulk", guard(Role.CONTRIBUTE, upload_bulk, action="upload"))
    app.router.add_get("/jobs/{job_id}", jobs.get_job)
    app.router.add_delete("/jobs/{job_id}", guard(Role.OPERATOR, jobs.cancel_job, action="cancel"))
    app.router.add_get("/jobs/{job_id}/events", events.job_events)
    app.router.add_post("/retrain", guard(Role.OPERATOR, jobs.retrain, action="retrain"))
    app.router.add_get("/models", models.list_models)
    app.router.add_post("/models/rollback", guard(Role.OPERATOR, models.rollback, action="rollback"))
    app.router.add_post("/models/{version}/promote",
                        guard(Role.OPERATOR, version_checked(models.promote), action="promote"))
    app.router.add_get("/audit", guard(Role.OPERATOR, audit.list_events))
    app.router.add_get("/metrics", metrics_handler(registry))
    app.router.add_get("/openapi.json", openapi)
    _open_inference_protocol(app)
    return app


def _open_inference_protocol(app: web.Application) -> None:
    """The Open Inference Protocol's routes (gateway/v2.py), each with and without a version."""
    app.router.add_get("/v2", v2.server_metadata)
    app.router.add_get("/v2/health/live", v2.server_live)
    app.router.add_get("/v2/health/ready", v2.server_ready)
    model, version = "/v2/models/{model_name}", "/v2/models/{model_name}/versions/{version}"
    app.router.add_get(model, v2.model_metadata)
    app.router.add_get(version, version_checked(v2.model_metadata))
    app.router.add_get(f"{model}/ready", v2.model_ready)
    app.router.add_get(f"{version}/ready", version_checked(v2.model_ready))
    app.router.add_post(f"{model}/infer", guard(Role.PREDICT, v2.infer))
    app.router.add_post(f"{version}/infer", guard(Role.PREDICT, version_checked(v2.infer)))
