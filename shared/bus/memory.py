"""An in-process `MessageBus` for the embedded mode and for tests: same contract, no server.

Given a journal folder, persistent messages outlive the process as they outlive a RabbitMQ
restart (`shared.bus.journal`); without one, nothing does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.bus.base import BrokerUnavailable, Delivery, Handler, QueueFull, QueueStats, Unroutable
from shared.bus.journal import Journal
from shared.bus.rpc import PendingReplies
from shared.bus.topology import DEAD_QUEUE_MAX_BYTES, DEAD_QUEUE_MAX_MESSAGES, dead_letter_queue
from shared.wire import new_id

log = logging.getLogger(__name__)


@dataclass
class _Envelope:
    delivery: Delivery
    expires_at: float | None
    journal_path: Path | None = None

    def forget(self) -> None:
        """Done with: its journal file goes."""
        if self.journal_path is not None:
            Journal.remove(self.journal_path)

    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at < time.monotonic()


class _Queue:
    def __init__(self, max_length: int | None) -> None:
        self.items: asyncio.Queue[_Envelope] = asyncio.Queue()
        self.max_length = max_length
        self.consumers = 0

    def depth(self) -> int:
        """Messages ready, after dropping expired ones at the head (as RabbitMQ does)."""
        while not self.items.empty():
            head = self.items._queue[0]  # type: ignore[attr-defined]  # asyncio.Queue's deque, to peek
            if not head.expired():
                break
            self.items.get_nowait().forget()
        return self.items.qsize()


class _DeadQueue(_Queue):
    """Bounded in count and bytes; past either bound the oldest message is dropped."""

    def __init__(self) -> None:
        super().__init__(DEAD_QUEUE_MAX_MESSAGES)
        self.bytes = 0

    def add(self, delivery: Delivery) -> None:
        self.items.put_nowait(_Envelope(delivery, None))
        self.bytes += len(delivery.body)
        while self.items.qsize() > DEAD_QUEUE_MAX_MESSAGES or self.bytes > DEAD_QUEUE_MAX_BYTES:
            self.bytes -= len(self.items.get_nowait().delivery.body)


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
            if envelope.expired():
                envelope.forget()
                self._slots.release()
                continue
            task = asyncio.create_task(self._handle(envelope))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _handle(self, envelope: _Envelope) -> None:
        try:
            await self._handler(envelope.delivery)
        except Exception:
            log.exception("handler failed on %s; dead-lettering the message", self._queue)
            await self._bus._dead_letter(self._queue, envelope.delivery)
        finally:
            self._slots.release()
        envelope.forget()  # only once handled: a handler cancelled mid-work leaves it journalled

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
    """A `MessageBus` held in this process's memory. Loop-only. With a `journal` folder, the
    persistent messages published to a queue and not yet handled are kept there, and a bus made
    on the same folder after a restart (or a `kill -9`) delivers them again, marked
    redelivered; without one nothing survives the process."""

    def __init__(self, journal: Path | None = None) -> None:
        self._queues: dict[str, _Queue] = {}
        self._journal = Journal(journal) if journal is not None else None
        self._subscribers: dict[str, list[_Subscriber]] = {}
        self._replies = PendingReplies(f"amq.gen-{new_id()}")
        #: Deliveries of broadcasts still running: held here so none is garbage-collected
        #: mid-flight (the event loop keeps only weak references to tasks).
        self._broadcasts: set[asyncio.Task[None]] = set()
        self._closed = False
        if self._journal is not None:
            self._replay(self._journal)

    def _replay(self, journal: Journal) -> None:
        now_wall, now = time.time(), time.monotonic()
        for queue, entries in journal.load().items():
            self._declare(queue, None)
            for entry in entries:
                if entry.expires_at is not None and entry.expires_at < now_wall:
                    Journal.remove(entry.path)  # expired while the process was down
                    continue
                expires_at = None if entry.expires_at is None else now + entry.expires_at - now_wall
                self._queues[queue].items.put_nowait(_Envelope(entry.delivery, expires_at, entry.path))
            if entries:
                log.info("%d journalled messages of %s delivered again", len(entries), queue)

    @property
    def connected(self) -> bool:
        return not self._closed

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Return at once; raises BrokerUnavailable once the bus is closed."""
        if self._closed:
            raise BrokerUnavailable("the bus is closed")

    def _declare(self, name: str, max_length: int | None) -> None:
        if name not in self._queues:
            self._queues[name] = _Queue(max_length)
            self._queues.setdefault(dead_letter_queue(name), _DeadQueue())
        elif max_length is not None and self._queues[name].max_length is None:
            self._queues[name].max_length = max_length  # made at start from the journal

    def pending(self, queue: str) -> list[Delivery]:
        """The deliveries waiting in `queue` (not those a handler holds), oldest first."""
        target = self._queues.get(queue)
        # asyncio.Queue's own deque: a snapshot of what waits, without taking it
        return [] if target is None else [e.delivery for e in list(target.items._queue)]  # type: ignore[attr-defined]

    async def declare_queue(self, name: str, *, max_length: int | None = None) -> None:
        self._declare(name, max_length)

    async def publish(
        self,
        queue: str,
        body: bytes,
        *,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expiration: float | None = None,
        headers: Mapping[str, object] | None = None,
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
        kept = None
        if persistent and self._journal is not None:
            wall_expiry = None if expiration is None else time.time() + expiration
            try:
                kept = await asyncio.to_thread(self._journal.write, queue, delivery, wall_expiry)
            except OSError as exc:
                raise BrokerUnavailable(f"could not keep the message for {queue!r}: {exc}") from exc
        target.items.put_nowait(_Envelope(delivery, expires_at, kept))

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> _Consumer:
        if queue not in self._queues:
            raise Unroutable(f"no queue named {queue!r}")
        self._queues[queue].consumers += 1
        return _Consumer(self, queue, handler, prefetch)

    async def call(
        self, queue: str, body: bytes, *, timeout: float, headers: Mapping[str, object] | None = None
    ) -> bytes:
        async def publish(correlation_id: str) -> None:
            await self.publish(queue, body, correlation_id=correlation_id, reply_to=self._replies.reply_to,
                               expiration=timeout, headers=headers, persistent=False)

        return await self._replies.call(publish, queue=queue, timeout=timeout)

    async def reply(self, request: Delivery, body: bytes) -> None:
        if request.reply_to:
            with contextlib.suppress(Unroutable):  # the caller is gone; nobody waits for it
                await self.publish(request.reply_to, body, correlation_id=request.correlation_id,
                                   persistent=False)

    async def broadcast(self, exchange: str, body: bytes) -> None:
        """Start one delivery per current subscriber and return; a handler that raises is
        logged. Raises BrokerUnavailable once the bus is closed."""
        if self._closed:
            raise BrokerUnavailable("the bus is closed")
        for subscriber in list(self._subscribers.get(exchange, [])):
            task = asyncio.create_task(self._deliver(subscriber, Delivery(body)),
                                       name=f"broadcast:{exchange}")
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
        dead = self._queues.get(dead_letter_queue(queue))
        if isinstance(dead, _DeadQueue):
            dead.add(delivery)

    async def close(self) -> None:
        """Refuse further publishes, fail pending calls, and cancel (and wait for) the
        broadcast deliveries still running."""
        self._closed = True
        self._replies.fail_all(BrokerUnavailable("the bus was closed"))
        running = list(self._broadcasts)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
