"""A service's heartbeat: its status broadcast on the status exchange every few seconds.

One loop for every service (the inference worker's `WorkerStatus`, the ingest and trainer
services' `ServiceStatus`); the gateway lists who it heard from (gateway/workers.py) and forgets
an instance silent for a few intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable

from shared.bus import MessageBus
from shared.errors import DermaScanError
from shared.fine_tune_policy import FineTunePolicy
from shared.messages import Message, ServiceStatus, encode

log = logging.getLogger(__name__)


def instance_id() -> str:
    """This process's id on the status exchange: host and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Heartbeat:
    """Broadcasts `status()` on `exchange` every `interval_s` from `start()` until `stop()`.

    A broadcast the bus refuses (broker down) is skipped, never fatal: the next beat tries again.
    Loop-only.
    """

    def __init__(self, bus: MessageBus, exchange: str, status: Callable[[], Message],
                 interval_s: float) -> None:
        self._bus = bus
        self._exchange = exchange
        self._status = status
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def of_service(cls, bus: MessageBus, exchange: str, service: str, interval_s: float, *,
                   fine_tune: FineTunePolicy | None = None) -> Heartbeat:
        """The heartbeat of a service that says it is up (`ServiceStatus`), its uptime counted
        from now; the trainer's also says what a fine-tune needs (`fine_tune`)."""
        started_at, instance = time.time(), instance_id()
        return cls(bus, exchange, lambda: ServiceStatus(
            service=service, instance_id=instance, started_at=started_at, interval_s=interval_s,
            fine_tune=fine_tune), interval_s)

    @property
    def running(self) -> bool:
        """Whether the loop is beating."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start beating (the first beat at once); a second call does nothing."""
        if self._task is None:
            self._task = asyncio.create_task(self._beat(), name=f"heartbeat-{self._exchange}")
            self._task.add_done_callback(_report_death)

    async def send(self) -> None:
        """Broadcast the status now (e.g. after it changed), skipping it if the bus refuses."""
        with contextlib.suppress(DermaScanError):
            await self._bus.broadcast(self._exchange, encode(self._status()))

    async def _beat(self) -> None:
        while True:
            await self.send()
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        """Stop beating and wait for the loop to end; the gateway forgets this instance soon after."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _report_death(task: asyncio.Task[None]) -> None:
    """Done-callback: a heartbeat that stopped by itself (not cancelled) says why."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped: %r; the gateway will report this instance gone",
                  task.get_name(), task.exception())
