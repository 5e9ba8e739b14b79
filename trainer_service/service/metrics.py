"""Prometheus metrics of the trainer service (`dermascan_trainer_service_*`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from shared.metrics import LONG_BUCKETS, register_uptime

PREFIX = "dermascan_trainer_service"


class TrainerMetrics:
    """Every metric the trainer exports, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        register_uptime(registry, "trainer_service")
        self.jobs = Counter(f"{PREFIX}_jobs_total", "Training jobs by final state.", ["status"],
                            registry=registry)
        for status in ("succeeded", "rejected", "failed", "cancelled"):
            self.jobs.labels(status)  # exported from the start, so increase() sees the first job
        self.training_seconds = Histogram(f"{PREFIX}_training_seconds", "Duration of a training job.",
                                          buckets=LONG_BUCKETS, registry=registry)
        self.running = Gauge(f"{PREFIX}_jobs_running", "Training jobs in progress.", registry=registry)
        self.balanced_accuracy = Gauge(f"{PREFIX}_last_balanced_accuracy",
                                       "Held-out balanced accuracy of the last trained model.",
                                       registry=registry)
        self.balanced_accuracy.set(float("nan"))  # nothing trained yet: 0 would read as a bad model
        self.class_recall = Gauge(f"{PREFIX}_last_class_recall",
                                  "Held-out recall per class of the last trained model.", ["label"],
                                  registry=registry)
        self.tracking_failures = Counter(f"{PREFIX}_tracking_failures_total",
                                         "Calls to the MLflow tracking server that failed "
                                         "(the training went on).",
                                         registry=registry)
        self.current_model = Info(f"{PREFIX}_current_model", "Version the registry serves.",
                                  registry=registry)
