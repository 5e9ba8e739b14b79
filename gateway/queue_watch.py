"""The broker's work queues as last sampled, shared by the queue gauges of /metrics and the open
`GET /status`: a sample asks the broker about every queue at once (on RabbitMQ a passive declare
each, on a channel opened and closed for it) and serves every reader for `FRESH_S`, so no caller
can make the broker open channels at the rate it sends requests.
"""

from __future__ import annotations

import asyncio
import math

from aiohttp import web

from shared.bus import MessageBus, QueueStats
from shared.errors import DermaScanError


class QueueWatch:
    """Depth and consumers of `names`, at most `FRESH_S` old. Loop-only; concurrent callers share
    one sample."""

    FRESH_S = 1.0

    def __init__(self, bus: MessageBus, names: list[str], timeout_s: float = 2.0) -> None:
        self.bus, self.names, self.timeout_s = bus, names, timeout_s
        self._lock = asyncio.Lock()
        self._last: dict[str, QueueStats | None] = dict.fromkeys(names)
        self._at = -math.inf

    async def sample(self) -> dict[str, QueueStats | None]:
        """name -> its stats, None for a queue the broker did not answer about (or no broker)."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            if loop.time() - self._at >= self.FRESH_S:
                stats = await asyncio.gather(*(self._one(name) for name in self.names))
                self._last, self._at = dict(zip(self.names, stats, strict=True)), loop.time()
            return self._last

    async def _one(self, name: str) -> QueueStats | None:
        if not self.bus.connected:
            return None
        try:
            return await asyncio.wait_for(self.bus.queue_stats(name), self.timeout_s)
        except (DermaScanError, TimeoutError):
            return None


QUEUE_WATCH = web.AppKey("queue_watch", QueueWatch)
