"""What only the in-memory bus has to get right: it runs broadcast handlers as tasks of its own.

(Everything both buses share is in test_bus_contract.py.)
"""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref

import pytest

from shared.bus import BrokerUnavailable, Delivery
from shared.bus.memory import MemoryBus

pytestmark = pytest.mark.timeout(30)


def other_pending_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]


async def test_broadcasts_in_flight_survive_garbage_collection() -> None:
    bus = MemoryBus()
    gates: weakref.WeakSet[asyncio.Future[None]] = weakref.WeakSet()
    delivered: list[bytes] = []

    async def handler(delivery: Delivery) -> None:
        gate = asyncio.get_running_loop().create_future()
        gates.add(gate)  # strongly held by this delivery alone, like a half-read socket
        await gate
        delivered.append(delivery.body)

    await bus.subscribe("models", handler)
    sent = [f"model v{i} promoted".encode() for i in range(50)]
    for body in sent:
        await bus.broadcast("models", body)
        await asyncio.sleep(0)  # the delivery starts and waits on its gate
        gc.collect()
    for gate in list(gates):
        gate.set_result(None)
    for _ in range(100):
        if len(delivered) == len(sent):
            break
        await asyncio.sleep(0.01)
    assert sorted(delivered) == sorted(sent)
    await bus.close()


async def test_close_cancels_the_deliveries_still_running_and_refuses_more() -> None:
    bus = MemoryBus()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def stuck(_: Delivery) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await bus.subscribe("status", stuck)
    await bus.broadcast("status", b"worker w1 up")
    await asyncio.wait_for(started.wait(), 5)
    await bus.close()
    assert cancelled.is_set()
    assert other_pending_tasks() == []
    with pytest.raises(BrokerUnavailable):
        await bus.broadcast("status", b"too late")


async def test_a_failing_broadcast_handler_is_logged_and_the_others_still_get_it(
        caplog: pytest.LogCaptureFixture) -> None:
    bus = MemoryBus()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def broken(_: Delivery) -> None:
        raise ValueError("cannot reload")

    async def fine(delivery: Delivery) -> None:
        await got.put(delivery.body)

    await bus.subscribe("models", broken)
    await bus.subscribe("models", fine)
    with caplog.at_level(logging.ERROR, logger="shared.bus.memory"):
        await bus.broadcast("models", b"model v2 promoted")
        assert await asyncio.wait_for(got.get(), 5) == b"model v2 promoted"
        await asyncio.sleep(0)
    assert "broadcast handler failed" in caplog.text and "cannot reload" in caplog.text
    await bus.close()
