"""Prometheus metrics of the inference worker (`dermascan_inference_worker_*`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, Info

from shared.metrics import BATCH_BUCKETS, CONFIDENCE_BUCKETS, LATENCY_BUCKETS, register_uptime

PREFIX = "dermascan_inference_worker"


class WorkerMetrics:
    """Every metric the worker exports, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        register_uptime(registry, "inference_worker")
        self.requests = Counter(f"{PREFIX}_requests_total", "Prediction requests by outcome.",
                                ["status"], registry=registry)
        self.queue_seconds = Histogram(f"{PREFIX}_queue_seconds",
                                       "Time a request waited in the broker.",
                                       buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_size = Histogram(f"{PREFIX}_batch_size", "Images per model call.",
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.compute_seconds = Histogram(f"{PREFIX}_compute_seconds", "Model call time per batch.",
                                         buckets=LATENCY_BUCKETS, registry=registry)
        self.predictions = Counter(f"{PREFIX}_predictions_total", "Predictions by label and model.",
                                   ["label", "model_version"], registry=registry)
        self.confidence = Histogram(f"{PREFIX}_confidence", "Probability of the predicted class.",
                                    buckets=CONFIDENCE_BUCKETS, registry=registry)
        self.model = Info(f"{PREFIX}_model", "Model version being served.", registry=registry)
        self.reloads = Counter(f"{PREFIX}_model_reloads_total", "Model loads by outcome.",
                               ["status"], registry=registry)
        self.requests.labels("ok")
        for status in ("loaded", "failed"):
            self.reloads.labels(status)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.compute_seconds.observe(seconds)
