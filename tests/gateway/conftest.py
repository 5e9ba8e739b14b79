"""An in-process DermaScan (gateway + worker on the in-memory bus) for API tests, built as the
embedded mode builds it (`embedded.system.build_system`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from embedded.system import build_system
from gateway.settings import GatewaySettings
from inference_worker.settings import WorkerSettings
from ingest_service.settings import IngestSettings
from shared.bus import connect_bus
from shared.store import open_store
from tests.support.tokens import CONTRIBUTOR_TOKEN, OPERATOR_TOKEN
from trainer_service.settings import TrainerSettings

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]


class GatewayServer(TestServer):
    """aiohttp's test server, but serving as `python -m gateway` does: a handler whose client
    left is not cancelled (aiohttp's `AppRunner` default; its test server cancels it), so what a
    handler does after a disconnect is what production does."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return web.AppRunner(self.app, **{**kwargs, "handler_cancellation": False})


@pytest.fixture
async def make_client(tmp_path: Path, tiny_model_dir: Path) -> AsyncIterator[MakeClient]:
    """Build a gateway client; `with_worker=False` leaves nobody to answer predictions,
    `with_jobs=True` adds the ingest and trainer services (`trainer` overrides the trainer's
    settings). The gateway knows the tokens of tests.support.tokens; `overrides` are gateway
    settings."""
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def make(*, with_worker: bool = True, with_jobs: bool = False,
                   trainer: dict[str, Any] | None = None, **overrides: Any) -> Client:
        settings = GatewaySettings(**{"store_url": tmp_path.as_uri(), "bundled_model_dir": tiny_model_dir,
                                      "operator_token": OPERATOR_TOKEN,
                                      "contributor_token": CONTRIBUTOR_TOKEN,
                                      **overrides})
        bus = await connect_bus(settings.broker_url)
        cleanups.append(bus.close)
        store = await open_store(settings.store_url)
        cleanups.append(store.close)
        common: dict[str, Any] = {"store_url": settings.store_url, "metrics_port": 0,
                                  "bundled_model_dir": tiny_model_dir}
        system = build_system(
            bus, store, gateway=settings,
            worker=WorkerSettings(**common, model_cache_dir=tmp_path / "cache", heartbeat_s=0.2)
            if with_worker else None,
            ingest=IngestSettings(**common) if with_jobs else None,
            trainer=TrainerSettings(**{**common, "work_dir": tmp_path / "trainer", "progress_interval_s": 0.2,
                                       **(trainer or {})}) if with_jobs else None)
        cleanups.append(system.stop)
        await system.start()
        assert system.app is not None
        client = Client(GatewayServer(system.app))
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
