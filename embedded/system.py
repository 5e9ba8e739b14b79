"""The whole system in one process: `build_system` wires the services onto one bus and one store.

The one place that assembles DermaScan from its services (the style's "only module that imports
all four" lives in this package): `python -m embedded`, the in-process API tests
(tests/gateway/conftest.py) and the retrain benchmark (bench/retrain.py) all build it here. The
caller opens the bus and the store and closes them after `stop()`; the system shares them and
closes neither.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.settings import GatewaySettings
from inference_worker.metrics import WorkerMetrics
from inference_worker.service import InferenceWorker
from inference_worker.settings import WorkerSettings
from ingest_service.metrics import IngestMetrics
from ingest_service.service import IngestService
from ingest_service.settings import IngestSettings
from shared.bus import MessageBus
from shared.runtime import Service
from shared.store import ObjectStore
from trainer_service.service.consumer import TrainerService
from trainer_service.service.metrics import TrainerMetrics
from trainer_service.settings import TrainerSettings


@dataclass
class System:
    """The services of one process, on one bus, store and metrics registry. `start()` then
    `stop()`; loop-only. `app` is the gateway (None when it was not asked for): serve it with an
    aiohttp runner or a test server, whose startup opens what the gateway itself needs."""

    bus: MessageBus
    store: ObjectStore
    registry: CollectorRegistry
    app: web.Application | None = None
    worker: InferenceWorker | None = None
    ingest: IngestService | None = None
    trainer: TrainerService | None = None
    _started: list[Service] = field(default_factory=list)

    @property
    def services(self) -> list[Service]:
        """The broker-driven services, in the order they start."""
        return [s for s in (self.worker, self.ingest, self.trainer) if s is not None]

    async def start(self) -> None:
        """Start every service (each waits for the bus, then declares its queues). Raises what a
        service's start raises; the ones already started are still stopped by `stop()`."""
        for service in self.services:
            await service.start()
            self._started.append(service)

    async def stop(self) -> None:
        """Drain and stop the started services, the last started first."""
        while self._started:
            await self._started.pop().stop()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[System]:
        """`start()` on entry, `stop()` on exit (also after an error)."""
        try:
            await self.start()
            yield self
        finally:
            await self.stop()


def build_system(bus: MessageBus, store: ObjectStore, *, gateway: GatewaySettings | None = None,
                 worker: WorkerSettings | None = None, ingest: IngestSettings | None = None,
                 trainer: TrainerSettings | None = None,
                 registry: CollectorRegistry | None = None) -> System:
    """The services whose settings are given, wired onto `bus` and `store`, their metrics in
    `registry` (a fresh one when None; the gateway's /metrics shows them all). Starts nothing.
    Raises what `create_app` raises for a malformed token file."""
    registry = registry if registry is not None else CollectorRegistry()
    return System(
        bus=bus, store=store, registry=registry,
        app=create_app(gateway, bus=bus, store=store, registry=registry) if gateway is not None else None,
        worker=InferenceWorker(worker, bus, store, WorkerMetrics(registry)) if worker is not None else None,
        ingest=IngestService(ingest, bus, store, IngestMetrics(registry)) if ingest is not None else None,
        trainer=(TrainerService(trainer, bus, store, TrainerMetrics(registry))
                 if trainer is not None else None))
