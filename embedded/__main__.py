"""`python -m embedded`: DermaScan in one process, no servers needed.

The only module that imports every service: it wires them onto one in-memory bus and one
local-disk store, seeds an empty store with the committed sample dataset, and serves the UI,
the API and /metrics (of all services) on DERMASCAN_HTTP_PORT. Unless DERMASCAN_OPERATOR_TOKEN
is set, it makes an operator token for this run and prints it: the UI asks for it before an
upload or a retrain.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import Field, SecretStr, field_validator

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.tokens import new_token
from inference_worker.metrics import WorkerMetrics
from inference_worker.service import InferenceWorker
from inference_worker.settings import WorkerSettings
from ingest_service.metrics import IngestMetrics
from ingest_service.service import IngestService
from ingest_service.settings import IngestSettings
from shared.bus import connect_bus
from shared.catalog import Catalog
from shared.runtime import run, setup_logging, wait_for_shutdown
from shared.settings import REPO_ROOT, CommonSettings
from shared.store import ObjectStore, open_store
from trainer_service.importer import import_dataset
from trainer_service.metrics import TrainerMetrics
from trainer_service.service import TrainerService
from trainer_service.settings import TrainerSettings

log = logging.getLogger("embedded")


class EmbeddedSettings(CommonSettings):
    """What only the embedded mode reads."""

    seed_dataset: Path | None = Field(
        REPO_ROOT / "data" / "sample",
        description="Dataset imported into an empty store at start (embedded mode); empty: none.")

    @field_validator("seed_dataset", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value


async def seed(store: ObjectStore, dataset: Path | None) -> None:
    if dataset is None or not dataset.is_dir() or await Catalog(store).records():
        return
    summary = await import_dataset(store, dataset, batch="sample", log=log.debug)
    log.info("seeded the empty store with %s: %s", dataset, summary)


def with_operator_token(settings: GatewaySettings) -> GatewaySettings:
    """`settings`, with a fresh operator token printed on stdout when none is configured."""
    if settings.operator_token is not None:
        return settings
    token = new_token()
    print(f"DermaScan operator token for this run (uploads, retraining, promotion; the UI asks "
          f"for it): {token}\n  (set DERMASCAN_OPERATOR_TOKEN to choose your own)", flush=True)
    return settings.model_copy(update={"operator_token": SecretStr(token)})


async def serve() -> None:
    gateway_settings = with_operator_token(GatewaySettings())
    registry = CollectorRegistry()
    bus = await connect_bus(gateway_settings.broker_url)
    store = await open_store(gateway_settings.store_url, endpoint_url=gateway_settings.s3_endpoint_url)
    services = [
        InferenceWorker(WorkerSettings(metrics_port=0), bus, store, WorkerMetrics(registry)),
        IngestService(IngestSettings(metrics_port=0), bus, store, IngestMetrics(registry)),
        TrainerService(TrainerSettings(metrics_port=0), bus, store, TrainerMetrics(registry)),
    ]
    runner = web.AppRunner(create_app(gateway_settings, bus=bus, store=store, registry=registry),
                           access_log=None)
    try:
        await runner.setup()
        await seed(store, EmbeddedSettings().seed_dataset)
        for service in services:
            await service.start()
        await web.TCPSite(runner, gateway_settings.http_host, gateway_settings.http_port).start()
        log.info("DermaScan (embedded) on http://%s:%d/", gateway_settings.http_host,
                 gateway_settings.http_port)
        await wait_for_shutdown()
    finally:
        for service in reversed(services):
            await service.stop()
        await runner.cleanup()
        await bus.close()
        await store.close()


def main() -> None:
    setup_logging(GatewaySettings().log_level)
    run(serve)


if __name__ == "__main__":
    main()
