"""`python -m inference_worker`: one worker process serving predictions from the predict queue."""

from __future__ import annotations

import argparse

from inference_worker.metrics import WorkerMetrics
from inference_worker.service import InferenceWorker
from inference_worker.settings import WorkerSettings
from shared.runtime import run, serve_service, setup_logging


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m inference_worker", description=__doc__)
    parser.add_argument("--concurrency", type=int, help="model streams (DERMASCAN_WORKER_STREAMS)")
    args = parser.parse_args()
    # Built anew rather than copied, so that defaults derived from the streams follow them.
    settings = WorkerSettings(streams=args.concurrency) if args.concurrency else WorkerSettings()
    setup_logging(settings.log_level)
    run(lambda: serve_service(
        settings, lambda bus, store,
        registry: InferenceWorker(settings, bus, store, WorkerMetrics(registry))))


if __name__ == "__main__":
    main()
