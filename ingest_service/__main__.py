"""`python -m ingest_service`: validates and stores bulk uploads from the ingest queue."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from ingest_service.metrics import IngestMetrics
from ingest_service.service import IngestService
from ingest_service.settings import IngestSettings
from shared.bus import connect_bus
from shared.metrics import serve_metrics
from shared.runtime import run, setup_logging, wait_for_shutdown
from shared.store import open_store


async def serve(settings: IngestSettings) -> None:
    registry = CollectorRegistry()
    runner = await serve_metrics(registry, settings.metrics_host, settings.metrics_port) if settings.metrics_port else None
    bus = await connect_bus(settings.broker_url)
    store = await open_store(settings.store_url, endpoint_url=settings.s3_endpoint_url)
    service = IngestService(settings, bus, store, IngestMetrics(registry))
    try:
        await service.start()
        await wait_for_shutdown()
    finally:
        await service.stop()
        await bus.close()
        await store.close()
        if runner is not None:
            await runner.cleanup()


def main() -> None:
    settings = IngestSettings()
    setup_logging(settings.log_level)
    run(lambda: serve(settings))


if __name__ == "__main__":
    main()
