"""`python -m ingest_service`: validates and stores bulk uploads from the ingest queue."""

from __future__ import annotations

from ingest_service.metrics import IngestMetrics
from ingest_service.service import IngestService
from ingest_service.settings import IngestSettings
from shared.runtime import run, serve_service, service_parser, setup_logging


def main(argv: list[str] | None = None) -> None:
    service_parser("python -m ingest_service", __doc__).parse_args(argv)
    settings = IngestSettings()
    setup_logging(settings.log_level)
    run(lambda: serve_service(
        settings, lambda bus, store, registry: IngestService(settings, bus, store, IngestMetrics(registry))))


if __name__ == "__main__":
    main()
