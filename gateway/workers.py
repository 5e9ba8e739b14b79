"""What the gateway knows of the inference workers: their heartbeats on the status exchange."""

from __future__ import annotations

import time

from shared.bus import Delivery
from shared.messages import WorkerStatus, decode


class WorkerDirectory:
    """Latest status of each worker; a worker silent for `ttl_factor` intervals is gone."""

    def __init__(self, ttl_factor: float) -> None:
        self._ttl_factor = ttl_factor
        self._seen: dict[str, tuple[WorkerStatus, float]] = {}

    async def on_status(self, delivery: Delivery) -> None:
        status = decode(WorkerStatus, delivery.body)
        self._seen[status.worker_id] = (status, time.monotonic())

    def live(self) -> list[WorkerStatus]:
        """Workers heard from recently, oldest id first; forgets the others."""
        now = time.monotonic()
        for worker_id, (status, seen) in list(self._seen.items()):
            if now - seen > status.interval_s * self._ttl_factor:
                del self._seen[worker_id]
        return [status for status, _ in sorted(self._seen.values(), key=lambda s: s[0].worker_id)]

    def serving(self) -> list[WorkerStatus]:
        """Live workers that have a model loaded."""
        return [status for status in self.live() if status.model_version is not None]
