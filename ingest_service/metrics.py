"""Prometheus metrics of the ingest service (`dermascan_ingest_service_*`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from shared.metrics import LONG_BUCKETS, register_uptime

PREFIX = "dermascan_ingest_service"


class IngestMetrics:
    """Every metric the ingest service exports, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        register_uptime(registry, "ingest_service")
        self.files = Counter(f"{PREFIX}_files_total", "Uploaded files by outcome and reason.",
                             ["status", "reason"], registry=registry)
        self.stored_bytes = Counter(f"{PREFIX}_stored_bytes", "Bytes of images written to the store.",
                                    registry=registry)
        self.jobs = Counter(f"{PREFIX}_jobs_total", "Ingest jobs by final state.", ["status"],
                            registry=registry)
        self.requeues = Counter(f"{PREFIX}_requeues_total",
                                "Ingest jobs requeued for another attempt (the store stayed unavailable).",
                                registry=registry)
        self.resumes = Counter(f"{PREFIX}_resumes_total",
                               "Ingest jobs reported worker_lost that this service was delivered again "
                               "and resumed.", registry=registry)
        self.store_retries = Counter(f"{PREFIX}_store_retries_total",
                                     "Object-store calls retried after a transient failure.", ["operation"],
                                     registry=registry)
        for status in ("succeeded", "failed"):
            self.jobs.labels(status)  # exported from the start, so increase() sees the first job
        self.job_seconds = Histogram(f"{PREFIX}_job_seconds", "Time to process one ingest job.",
                                     buckets=LONG_BUCKETS, registry=registry)
