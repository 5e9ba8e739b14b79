"""An in-process DermaScan (gateway + worker on the in-memory bus) for API tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.settings import GatewaySettings
from inference_worker.metrics import WorkerMetrics
from inference_worker.service import InferenceWorker
from inference_worker.settings import WorkerSettings
from ingest_service.metrics import IngestMetrics
from ingest_service.service import IngestService
from ingest_service.settings import IngestSettings
from shared.bus import connect_bus
from shared.store import open_store
from tests.support.tokens import CONTRIBUTOR_TOKEN, OPERATOR_TOKEN
from trainer_service.metrics import TrainerMetrics
from trainer_service.service import TrainerService
from trainer_service.settings import TrainerSettings

Client = TestClient  # type: ignore[type-arg]
MakeClient = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]


@pytest.fixture
async def make_client(tmp_path: Path, tiny_model_dir: Path) -> AsyncIterator[MakeClient]:
    """Build a gateway client; `with_worker=False` leaves nobody to answer predictions,
    `with_jobs=True` adds the ingest and trainer services (`trainer` overrides the trainer's
    settings). The gateway knows the tokens of tests.support.tokens; `overrides` are gateway
    settings."""
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def make(*, with_worker: bool = True, with_jobs: bool = False, trainer: dict[str, object] | None = None,
                   **overrides: object) -> TestClient:  # type: ignore[type-arg]
        settings = GatewaySettings(**{"store_url": tmp_path.as_uri(), "bundled_model_dir": tiny_model_dir,
                                      "operator_token": OPERATOR_TOKEN, "contributor_token": CONTRIBUTOR_TOKEN,
                                      **overrides})
        bus = await connect_bus(settings.broker_url)
        store = await open_store(settings.store_url)
        if with_jobs:
            common = {"store_url": settings.store_url, "metrics_port": 0, "bundled_model_dir": tiny_model_dir}
            for service in (
                IngestService(IngestSettings(**common), bus, store, IngestMetrics(CollectorRegistry())),
                TrainerService(TrainerSettings(**common, work_dir=tmp_path / "trainer", progress_interval_s=0.2,
                                               **(trainer or {})),
                               bus, store, TrainerMetrics(CollectorRegistry())),
            ):
                await service.start()
                cleanups.append(service.stop)
        if with_worker:
            worker = InferenceWorker(
                WorkerSettings(store_url=settings.store_url, bundled_model_dir=tiny_model_dir,
                               model_cache_dir=tmp_path / "cache", metrics_port=0, heartbeat_s=0.2),
                bus, store, WorkerMetrics(CollectorRegistry()))
            await worker.start()
            cleanups.append(worker.stop)
        client = TestClient(TestServer(create_app(settings, bus=bus, store=store)))
        await client.start_server()
        cleanups.append(client.close)
        if with_worker:
            for _ in range(50):  # until the first heartbeat arrived
                if (await client.get("/readyz")).status == 200:
                    break
                await asyncio.sleep(0.05)
        return client

    yield make
    for cleanup in reversed(cleanups):
        await cleanup()
