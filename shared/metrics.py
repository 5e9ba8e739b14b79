"""Prometheus helpers shared by every service's `metrics.py`: buckets, uptime, exposition."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: Latency buckets (seconds) for this workload: a batched forward pass takes milliseconds,
#: a queued prediction tens to hundreds of ms, an overloaded one up to the deadline (10 s).
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: Training and ingest take seconds to an hour.
LONG_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: Batch sizes: powers of two up to the largest batch a worker forms.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
#: Confidence of the top class.
CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def register_uptime(registry: CollectorRegistry, service: str) -> None:
    """`dermascan_<service>_start_time_seconds` and `..._uptime_seconds` gauges."""
    started = time.time()
    start = Gauge(f"dermascan_{service}_start_time_seconds", "Unix time the process started.",
                  registry=registry)
    start.set(started)
    uptime = Gauge(f"dermascan_{service}_uptime_seconds", "Seconds since the process started.",
                   registry=registry)
    uptime.set_function(lambda: time.time() - started)


def metrics_handler(registry: CollectorRegistry) -> Handler:
    """An aiohttp handler serving `registry` in the Prometheus text format."""

    async def handle(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    return handle


async def _live(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> web.AppRunner:
    """Serve `/metrics` (and `/livez`) on host:port; the caller cleans the runner up."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(registry))
    app.router.add_get("/livez", _live)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
