"""`python -m inference_worker`: one worker process serving predictions from the predict queue."""

from __future__ import annotations

import argparse
import logging

from prometheus_client import CollectorRegistry

from inference_worker.metrics import WorkerMetrics
from inference_worker.service import InferenceWorker
from inference_worker.settings import WorkerSettings
from shared.bus import connect_bus
from shared.metrics import serve_metrics
from shared.runtime import run, setup_logging, wait_for_shutdown
from shared.store import open_store

log = logging.getLogger("inference_worker")


async def serve(settings: WorkerSettings) -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    runner = None
    if settings.metrics_port:
        runner = await serve_metrics(registry, settings.metrics_host, settings.metrics_port)
    bus = await connect_bus(settings.broker_url)
    store = await open_store(settings.store_url, endpoint_url=settings.s3_endpoint_url)
    worker = InferenceWorker(settings, bus, store, metrics)
    try:
        await worker.start()
        await wait_for_shutdown()
        log.info("draining")
    finally:
        await worker.stop()
        await bus.close()
        await store.close()
        if runner is not None:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m inference_worker", description=__doc__)
    parser.add_argument("--concurrency", type=int, help="model streams (DERMASCAN_WORKER_STREAMS)")
    args = parser.parse_args()
    settings = WorkerSettings()
    if args.concurrency:
        settings = settings.model_copy(update={"streams": args.concurrency})
    setup_logging(settings.log_level)
    run(lambda: serve(settings))


if __name__ == "__main__":
    main()
