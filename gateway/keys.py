"""Typed keys of the gateway application's state."""

from __future__ import annotations

import time

from aiohttp import web

from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.workers import WorkerDirectory
from shared.bus import MessageBus
from shared.jobs import JobStore
from shared.registry import ModelRegistry
from shared.store import ObjectStore

SETTINGS = web.AppKey("settings", GatewaySettings)
BUS = web.AppKey("bus", MessageBus)
STORE = web.AppKey("store", ObjectStore)
REGISTRY = web.AppKey("registry", ModelRegistry)
JOBS = web.AppKey("jobs", JobStore)
METRICS = web.AppKey("metrics", GatewayMetrics)
WORKERS = web.AppKey("workers", WorkerDirectory)
STARTED = web.AppKey("started", float)


def uptime_s(app: web.Application) -> float:
    return time.monotonic() - app[STARTED]
