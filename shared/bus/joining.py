"""Joining the broker at start-up, all or nothing: a service's declares, consumers and
subscriptions are set up again from the start when the broker goes away part-way.

A RabbitMQ connection is restored by itself, but a service's start-up is a sequence of calls: a
worker that lost the broker between its consumer and its subscription used to raise out of its
start and exit (or, told to stop in that moment, die of the SIGTERM itself, its loop's handlers
already gone: the `test_drain` flake).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from shared.bus.base import BrokerUnavailable, MessageBus, Subscription

log = logging.getLogger(__name__)

#: Declares what a service needs and appends each consumer or subscription it makes to the list.
Setup = Callable[[list[Subscription]], Awaitable[None]]


async def join(bus: MessageBus, setup: Setup, *, retry_s: float = 0.5) -> list[Subscription]:
    """Run `setup` once the broker is reachable, and return what it subscribed. When the broker
    goes away part-way (BrokerUnavailable), what it had subscribed is cancelled and it runs again
    once the broker is back; any other error is raised, after the same cancelling."""
    while True:
        await bus.wait_connected()
        made: list[Subscription] = []
        try:
            await setup(made)
            return made
        except BrokerUnavailable as exc:
            log.warning("the broker went away while this service joined it (%s); joining again once it "
                        "is back", exc)
            await _cancel(made)
        except BaseException:
            await _cancel(made)
            raise
        await asyncio.sleep(retry_s)


async def _cancel(made: list[Subscription]) -> None:
    for subscription in reversed(made):
        await subscription.cancel()
