"""An in-process `MessageBus` for the embedded mode and for tests: same contract, no server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from shared.bus.base import BrokerUnavailable, Delivery, Handler, QueueFull, QueueStats, Unroutable
from shared.bus.rpc import PendingReplies
from shared.messages import new_id

log = logging.getLogger(__name__)


@dataclass
class _Envelope:
    delivery: Delivery
    expires_at: float | None


class _Queue:
    def __init__(self, max_length: int | None) -> None:
        self.items: asyncio.Queue[_Envelope] = asyncio.Queue()
        self.max_length = max_length
        self.consumers = 0

    def depth(self) -> int:
        """Messages ready, after dropping expired ones at the head (as RabbitMQ does)."""
        now = time.monotonic()
        while not self.items.empty():
            head = self.items._queue[0]  # type: ignore[attr-defined]
            if head.expires_at is None or head.expires_at >= now:
                break
            self.items.get_nowait()
        return self.items.qsize()


class _Consumer:
    """Pulls from one queue and runs up to `prefetch` handlers at a time."""

    def __init__(self, bus: MemoryBus, queue: str, handler: Handler, prefetch: int) -> None:
        self._bus, self._queue, self._handler = bus, queue, handler
        self._slots = asyncio.Semaphore(prefetch)
        self._running: set[asyncio.Task[None]] = set()
        self._task = asyncio.create_task(self._pump(), name=f"consume:{queue}")

    async def _pump(self) -> None:
        source = self._bus._queues[self._queue]
        while True:
            await self._slots.acquire()
            envelope = await source.items.get()
            if envelope.expires_at is not None and envelope.expires_at < time.monotonic():
                self._slots.release()
                continue
            task = asyncio.create_task(self._handle(envelope.delivery))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            await self._handler(delivery)
        except Exception:
            log.exception("handler failed on %s; dead-lettering the message", self._queue)
            await self._bus._dead_letter(self._queue, delivery)
        finally:
            self._slots.release()

    async def cancel(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self._bus._queues[self._queue].consumers -= 1


class _Subscriber:
    def __init__(self, bus: MemoryBus, exchange: str, handler: Handler) -> None:
        self._bus, self._exchange, self.handler = bus, exchange, handler

    async def cancel(self) -> None:
        self._bus._subscribers.get(self._exchange, []).remove(self)


class MemoryBus:
    """A `MessageBus` held in this process's memory. Loop-only; nothing survives a restart."""

    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}
        self._subscribers: dict[str, list[_Subscriber]] = {}
        self._replies = PendingReplies(f"amq.gen-{new_id()}")
        #: Deliveries of broadcasts still running: held here so none is garbage-collected
        #: mid-flight (the event loop keeps only weak references to tasks).
        self._broadcasts: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def connected(self) -> bool:
        return not self._closed

    async def declare_queue(self, name: str, *, max_length: int | None = None) -> None:
        if name not in self._queues:
            self._queues[name] = _Queue(max_length)
            self._queues.setdefault(f"{name}.dead", _Queue(10_000))

    async def publish(
        self,
        queue: str,
        body: bytes,
        *,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expiration: float | None = None,
        headers: dict[str, object] | None = None,
        persistent: bool = True,
    ) -> None:
        if self._closed:
            raise BrokerUnavailable("the bus is closed")
        if queue == self._replies.reply_to:
            self._replies.resolve(correlation_id, body)
            return
        target = self._queues.get(queue)
        if target is None:
            raise Unroutable(f"no queue named {queue!r}")
        if target.max_length is not None and target.depth() >= target.max_length:
            raise QueueFull(f"queue {queue!r} holds its maximum of {target.max_length} messages")
        expires_at = None if expiration is None else time.monotonic() + expiration
        delivery = Delivery(body, correlation_id, reply_to, dict(headers or {}))
        target.items.put_nowait(_Envelope(delivery, expires_at))

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> _Consumer:
        if queue not in self._queues:
            raise Unroutable(f"no queue named {queue!r}")
        self._queues[queue].consumers += 1
        return _Consumer(self, queue, handler, prefetch)

    async def call(
        self, queue: str, body: bytes, *, timeout: float, headers: dict[str, object] | None = None
    ) -> bytes:
        async def publish(correlation_id: str) -> None:
            await self.publish(queue, body, correlation_id=correlation_id, reply_to=self._replies.reply_to,
                               expiration=timeout, headers=headers)

        return await self._replies.call(publish, queue=queue, timeout=timeout)

    async def reply(self, request: Delivery, body: bytes) -> None:
        if request.reply_to:
            with contextlib.suppress(Unroutable):  # the caller is gone; nobody waits for it
                await self.publish(request.reply_to, body, correlation_id=request.correlation_id)

    async def broadcast(self, exchange: str, body: bytes) -> None:
        """Start one delivery per current subscriber and return; a handler that raises is
        logged. Raises BrokerUnavailable once the bus is closed."""
        if self._closed:
            raise BrokerUnavailable("the bus is closed")
        for subscriber in list(self._subscribers.get(exchange, [])):
            task = asyncio.create_task(self._deliver(subscriber, Delivery(body)), name=f"broadcast:{exchange}")
            self._broadcasts.add(task)
            task.add_done_callback(self._broadcasts.discard)

    @staticmethod
    async def _deliver(subscriber: _Subscriber, delivery: Delivery) -> None:
        try:
            await subscriber.handler(delivery)
        except Exception:
            log.exception("broadcast handler failed")

    async def subscribe(self, exchange: str, handler: Handler) -> _Subscriber:
        subscriber = _Subscriber(self, exchange, handler)
        self._subscribers.setdefault(exchange, []).append(subscriber)
        return subscriber

    async def queue_stats(self, queue: str) -> QueueStats:
        target = self._queues.get(queue)
        if target is None:
            raise Unroutable(f"no queue named {queue!r}")
        return QueueStats(messages=target.depth(), consumers=target.consumers)

    async def _dead_letter(self, queue: str, delivery: Delivery) -> None:
        dead = self._queues.get(f"{queue}.dead")
        if dead is not None and dead.items.qsize() < (dead.max_length or 0):
            dead.items.put_nowait(_Envelope(delivery, None))

    async def close(self) -> None:
        """Refuse further publishes, fail pending calls, and cancel (and wait for) the
        broadcast deliveries still running."""
        self._closed = True
        self._replies.fail_all(BrokerUnavailable("the bus was closed"))
        running = list(self._broadcasts)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
