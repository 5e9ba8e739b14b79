"""`python -m embedded`: DermaScan in one process, no servers needed.

The only module that imports several services: it wires them onto one in-memory bus and one
local-disk store, and serves the UI, the API and /metrics on DERMASCAN_HTTP_PORT.
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.settings import GatewaySettings
from inference_worker.metrics import WorkerMetrics
from inference_worker.service import InferenceWorker
from inference_worker.settings import WorkerSettings
from shared.bus import connect_bus
from shared.runtime import run, setup_logging, wait_for_shutdown
from shared.store import open_store

log = logging.getLogger("embedded")


async def serve(gateway_settings: GatewaySettings, worker_settings: WorkerSettings) -> None:
    registry = CollectorRegistry()
    bus = await connect_bus(gateway_settings.broker_url)
    store = await open_store(gateway_settings.store_url, endpoint_url=gateway_settings.s3_endpoint_url)
    worker = InferenceWorker(worker_settings, bus, store, WorkerMetrics(registry))
    runner = web.AppRunner(create_app(gateway_settings, bus=bus, store=store, registry=registry),
                           access_log=None)
    try:
        await runner.setup()
        await worker.start()
        await web.TCPSite(runner, gateway_settings.http_host, gateway_settings.http_port).start()
        log.info("DermaScan (embedded) on http://%s:%d/", gateway_settings.http_host,
                 gateway_settings.http_port)
        await wait_for_shutdown()
    finally:
        await worker.stop()
        await runner.cleanup()
        await bus.close()
        await store.close()


def main() -> None:
    gateway_settings = GatewaySettings()
    worker_settings = WorkerSettings(metrics_port=0)
    setup_logging(gateway_settings.log_level)
    run(lambda: serve(gateway_settings, worker_settings))


if __name__ == "__main__":
    main()
