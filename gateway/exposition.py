"""`GET /metrics`: the gateway's Prometheus registry in the text format. The registry is the
application's, under `PROMETHEUS` (set by `create_app`), so the handler is a plain function that
the route table (gateway/routes.py) can name."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from shared.metrics import metrics_handler

PROMETHEUS = web.AppKey("prometheus", CollectorRegistry)


async def metrics(request: web.Request) -> web.StreamResponse:
    """The application's `PROMETHEUS` registry, as shared.metrics serves every service's."""
    return await metrics_handler(request.app[PROMETHEUS])(request)
