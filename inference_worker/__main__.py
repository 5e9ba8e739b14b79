"""`python -m inference_worker`: one worker process serving predictions from the predict queue."""

from __future__ import annotations

from inference_worker.metrics import WorkerMetrics
from inference_worker.service import InferenceWorker
from inference_worker.settings import WorkerSettings
from shared.runtime import run, serve_service, service_parser, setup_logging


def main(argv: list[str] | None = None) -> None:
    parser = service_parser("python -m inference_worker", __doc__)
    parser.add_argument("--concurrency", type=int, help="model streams (DERMASCAN_WORKER_STREAMS)")
    args = parser.parse_args(argv)
    # Built anew rather than copied, so that defaults derived from the streams follow them.
    settings = WorkerSettings(streams=args.concurrency) if args.concurrency else WorkerSettings()
    setup_logging(settings.log_level)
    run(lambda: serve_service(
        settings, lambda bus, store,
        registry: InferenceWorker(settings, bus, store, WorkerMetrics(registry))))


if __name__ == "__main__":
    main()
