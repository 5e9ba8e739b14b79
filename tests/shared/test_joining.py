"""Joining the broker at start-up, all or nothing (`shared.bus.joining.join`), on the in-memory bus;
the same on RabbitMQ, cut mid-way, is in test_rabbit_outage.py."""

from __future__ import annotations

import pytest

from shared.bus import BrokerUnavailable, Subscription
from shared.bus.joining import join
from shared.bus.memory import MemoryBus

pytestmark = pytest.mark.timeout(10)


class Made:
    """A subscription that counts its cancels."""

    def __init__(self) -> None:
        self.cancelled = 0

    async def cancel(self) -> None:
        self.cancelled += 1


async def test_a_setup_the_broker_interrupts_is_undone_and_run_again() -> None:
    bus, made, tries = MemoryBus(), [Made(), Made(), Made()], 0

    async def setup(subscriptions: list[Subscription]) -> None:
        nonlocal tries
        tries += 1
        subscriptions.append(made[tries - 1])
        if tries < 3:
            raise BrokerUnavailable("the connection to the broker was lost")
        subscriptions.append(Made())

    joined = await join(bus, setup, retry_s=0)
    assert tries == 3 and len(joined) == 2 and joined[0] is made[2]
    assert [m.cancelled for m in made] == [1, 1, 0]  # what the interrupted tries made, cancelled once


async def test_any_other_error_is_raised_after_what_was_made_is_cancelled() -> None:
    bus, made = MemoryBus(), Made()

    async def setup(subscriptions: list[Subscription]) -> None:
        subscriptions.append(made)
        raise ValueError("queue declared with other arguments")

    with pytest.raises(ValueError, match="other arguments"):
        await join(bus, setup)
    assert made.cancelled == 1
