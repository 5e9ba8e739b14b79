"""Acknowledging a RabbitMQ consumer's deliveries in as few frames as possible.

Each frame the worker writes costs a system call and a wake-up of the broker, which on a small
host costs more than the bytes (README, "Serving fast"): a micro-batch that finishes eight
requests at once acks them with one frame.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import aiormq
from aio_pika.abc import AbstractIncomingMessage

_CHANNEL_GONE = (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError)


class Acks:
    """Acknowledges one consumer's handled deliveries in as few frames as it can.

    Handled deliveries are acked once per turn of the event loop: one `multiple` ack up to the
    highest handled tag below every delivery still being handled (a micro-batch finishes many
    at once), and single acks for handled tags above one still running, so a slow message never
    holds others unacked (which would stall the prefetch window). Delivery tags count per
    channel (1, 2, 3, ... on a consumer's own channel): a delivery from a new channel (after a
    reconnect) starts the count afresh, and deliveries of a closed channel are not acked (the
    broker redelivers them). Until every tag up to the highest has been seen, acks are single.
    `before` runs first: the bus's replies leave before the acks of their requests, so a worker
    that dies in between has its requests redelivered rather than unanswered.
    """

    def __init__(self, before: Callable[[], Awaitable[None]]) -> None:
        self._before = before
        self._channel: object | None = None
        self._seen = self._highest = 0
        self._open: set[int] = set()  # delivered and not yet acked or rejected
        self._handled: list[AbstractIncomingMessage] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self._sending = asyncio.Lock()  # flushes go out in order: no single ack after a multiple

    def delivered(self, message: AbstractIncomingMessage) -> None:
        if message.channel is not self._channel:
            self._channel, self._seen, self._highest = message.channel, 0, 0
            self._open, self._handled = set(), []
        self._seen += 1
        self._highest = max(self._highest, _tag(message))
        self._open.add(_tag(message))

    def handled(self, message: AbstractIncomingMessage) -> None:
        if message.channel is not self._channel:
            return
        if not self._handled:
            task = asyncio.get_running_loop().create_task(self.flush())  # after this turn's others
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)
        self._handled.append(message)

    async def rejected(self, message: AbstractIncomingMessage) -> None:
        self._open.discard(_tag(message))
        with contextlib.suppress(*_CHANNEL_GONE):
            await message.reject(requeue=False)

    async def drain(self) -> None:
        """Ack what is handled and wait for every ack under way (before the channel closes)."""
        await self.flush()
        if self._flushing:
            await asyncio.wait(set(self._flushing))

    async def flush(self) -> None:
        handled, self._handled = self._handled, []
        if not handled:
            return
        await self._before()
        async with self._sending:
            self._open -= {_tag(m) for m in handled}
            # with a delivery not seen yet, it may lie below any handled tag: nothing is below 0
            oldest_open = min(self._open, default=self._highest + 1) if self._seen == self._highest else 0
            below = [m for m in handled if _tag(m) < oldest_open]
            with contextlib.suppress(*_CHANNEL_GONE):
                if below:
                    last = max(below, key=_tag)
                    await last.channel.basic_ack(_tag(last), multiple=True)
                for message in handled:
                    if _tag(message) > oldest_open:
                        await message.channel.basic_ack(_tag(message))


def _tag(message: AbstractIncomingMessage) -> int:
    assert message.delivery_tag is not None  # set on every delivery of a consumer that acks
    return message.delivery_tag
