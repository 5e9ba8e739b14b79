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

from gateway import events, thumbnails
from gateway.audit import AUDIT, AuditLog
from gateway.auth import AUTH_LIMITS, TOKENS, AuthLimits, guard
from gateway.catalog_view import CATALOG_VIEW, CatalogView
from gateway.errors import error_middleware
from gateway.exposition import PROMETHEUS
from gateway.keys import BUS, JOBS, METRICS, REGISTRY, SETTINGS, STARTED, STORE, WORKERS
from gateway.limits import UPLOAD_BYTES, ByteBudget, encoding_middleware, server_options
from gateway.metrics import GatewayMetrics
from gateway.openapi import ROUTE_TABLE, VERSION_PATTERN
from gateway.origins import cors_middleware, origin_middleware
from gateway.predict import IN_FLIGHT, InFlight
from gateway.protocol_log import protocol_log
from gateway.queue_watch import QUEUE_WATCH, QueueWatch
from gateway.ratelimit import RATE_LIMITS, RateLimits
from gateway.retention import sweep_forever
from gateway.routes import ROUTES, Route
from gateway.settings import GatewaySettings
from gateway.tokens import TokenBook
from gateway.workers import WorkerDirectory
from shared.bus import MessageBus, Subscription, connect_bus
from shared.bus.joining import join
from shared.bus.topology import Topology, declare
from shared.errors import BadRequest
from shared.jobs import JobStore
from shared.registry import ModelRegistry
from shared.store import ObjectStore, open_store_for

log = logging.getLogger(__name__)
#: Between tries to join the broker after an error that is not the broker going away.
_REJOIN_S = 5.0


async def _join_broker(app: web.Application) -> None:
    """Declare the queues and listen to worker heartbeats once the broker is reachable (`join`:
    again from the start when it goes away part-way), then keep the queue-depth gauges fresh."""
    bus, settings = app[BUS], app[SETTINGS]
    topology = Topology.of(settings)

    async def setup(made: list[Subscription]) -> None:
        await declare(bus, *topology.queues)
        made.append(await bus.subscribe(topology.status_exchange, app[WORKERS].on_status))

    while True:
        try:
            await join(bus, setup)
            break
        except Exception:  # a queue declared with other arguments, say: fixable while this runs
            log.exception("joining the broker failed; trying again in %g s", _REJOIN_S)
            await asyncio.sleep(_REJOIN_S)
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
        app[CATALOG_VIEW] = CatalogView(own_store)
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


def _wired(route: Route) -> Handler:
    """`route`'s handler behind the checks the table asks for: its `{version}` checked, then
    its role (and audited action) guarded, the guard first."""
    handler = route.handler
    if "{version}" in route.path:
        handler = version_checked(handler)
    if route.role is not None:
        handler = guard(route.role, handler, action=route.action)
    return handler


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

    It serves the routes of gateway/routes.py's table, each behind the role the table gives it
    (gateway/auth.py), to callers at an allowed host (gateway/origins.py)."""
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
    app[PROMETHEUS] = registry
    app[ROUTE_TABLE] = ROUTES
    for route in ROUTES:
        if route.method == "get":  # and HEAD, as aiohttp's add_get does
            app.router.add_get(route.path, _wired(route))
        else:
            app.router.add_route(route.method.upper(), route.path, _wired(route))
    return app

