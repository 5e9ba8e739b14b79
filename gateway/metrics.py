"""Prometheus metrics of the gateway (`dermascan_gateway_*`), and the middleware that counts."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.metrics import LATENCY_BUCKETS, register_uptime

PREFIX = "dermascan_gateway"


class GatewayMetrics:
    """Every metric the gateway exports, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        register_uptime(registry, "gateway")
        self.requests = Counter(f"{PREFIX}_requests_total", "HTTP requests by route and status.",
                                ["route", "method", "status"], registry=registry)
        self.request_seconds = Histogram(f"{PREFIX}_request_seconds", "HTTP latency by route.",
                                         ["route", "method"], buckets=LATENCY_BUCKETS, registry=registry)
        self.predict_seconds = Histogram(f"{PREFIX}_predict_seconds",
                                         "End-to-end /predict latency of answered predictions.",
                                         buckets=LATENCY_BUCKETS, registry=registry)
        self.rpc_seconds = Histogram(f"{PREFIX}_rpc_wait_seconds",
                                     "Time waiting for a worker's reply over the broker.",
                                     ["status"], buckets=LATENCY_BUCKETS, registry=registry)
        self.in_flight = Gauge(f"{PREFIX}_predictions_in_flight", "Predictions waiting for a worker.",
                               registry=registry)
        self.upload_bytes = Counter(f"{PREFIX}_upload_bytes", "Bytes of images received.",
                                    ["route"], registry=registry)
        self.queue_depth = Gauge(f"{PREFIX}_queue_depth", "Messages ready in a broker queue.",
                                 ["queue"], registry=registry)
        self.queue_consumers = Gauge(f"{PREFIX}_queue_consumers", "Consumers of a broker queue.",
                                     ["queue"], registry=registry)
        self.workers = Gauge(f"{PREFIX}_live_workers", "Inference workers heard from recently.",
                             registry=registry)
        self.auth_failures = Counter(
            f"{PREFIX}_auth_failures_total",
            "Requests refused for their token: missing_token, malformed_token, unknown_token, or "
            "address_limited (too many failures from the address).", ["reason"], registry=registry)

        self.rpc_seconds.labels("ok")

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        response = await handler(request)
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        self.requests.labels(route, request.method, str(response.status)).inc()
        self.request_seconds.labels(route, request.method).observe(time.perf_counter() - started)
        return response
