"""What the gateway knows of the other services: their heartbeats on the status exchange.

Inference workers send `WorkerStatus` (with the model they serve), the ingest and trainer
services `ServiceStatus`; one rule for all: an instance silent for `ttl_factor` of its own
intervals is gone.
"""

from __future__ import annotations

import time
from typing import TypeVar

from shared.bus import Delivery
from shared.messages import ServiceStatus, WorkerStatus, parse_status

K = TypeVar("K")
S = TypeVar("S", WorkerStatus, ServiceStatus)


class WorkerDirectory:
    """Latest heartbeat of each worker and service instance; loop-only."""

    def __init__(self, ttl_factor: float) -> None:
        self._ttl_factor = ttl_factor
        self._seen: dict[str, tuple[WorkerStatus, float]] = {}
        self._services: dict[tuple[str, str], tuple[ServiceStatus, float]] = {}

    async def on_status(self, delivery: Delivery) -> None:
        """Record one heartbeat; raises pydantic.ValidationError on a body that is none (the bus
        logs it and carries on)."""
        status = parse_status(delivery.body)
        if isinstance(status, WorkerStatus):
            self._seen[status.worker_id] = (status, time.monotonic())
        else:
            self._services[(status.service, status.instance_id)] = (status, time.monotonic())

    def _forget_silent(self, seen: dict[K, tuple[S, float]]) -> None:
        now = time.monotonic()
        for key, (status, heard) in list(seen.items()):
            if now - heard > status.interval_s * self._ttl_factor:
                del seen[key]

    def live(self) -> list[WorkerStatus]:
        """Workers heard from recently, oldest id first; forgets the others."""
        self._forget_silent(self._seen)
        return [status for status, _ in sorted(self._seen.values(), key=lambda s: s[0].worker_id)]

    def services(self) -> list[ServiceStatus]:
        """Ingest and trainer instances heard from recently, by service then id; forgets the others."""
        self._forget_silent(self._services)
        return [self._services[key][0] for key in sorted(self._services)]

    def serving(self) -> list[WorkerStatus]:
        """Live workers that have a model loaded."""
        return [status for status in self.live() if status.model_version is not None]
