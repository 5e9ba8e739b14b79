"""What only the in-memory bus has to get right: it runs broadcast handlers as tasks of its own,
keeps persistent messages in a journal across restarts when given one, and bounds dead letters.

(Everything both buses share is in test_bus_contract.py.)
"""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from pathlib import Path

import pytest

from shared.atomic_file import TEMP_PREFIX
from shared.bus import BrokerUnavailable, Delivery, topology
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
    gc.collect()  # once, with all 50 waiting (a full collection costs ~0.5 s in a process holding TensorFlow)
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


async def consumed(bus: MemoryBus, queue: str, count: int) -> list[Delivery]:
    """The next `count` deliveries of `queue`, handled (and so acked) at once."""
    got: list[Delivery] = []
    done = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        got.append(delivery)
        if len(got) == count:
            done.set()

    subscription = await bus.consume(queue, handler, prefetch=1)
    await asyncio.wait_for(done.wait(), 5)
    await subscription.cancel()
    return got


async def test_a_journalled_bus_delivers_unhandled_messages_again_after_a_restart(tmp_path: Path) -> None:
    before = MemoryBus(journal=tmp_path / "queues")
    await before.declare_queue("dermascan.ingest")
    for i in range(3):
        await before.publish("dermascan.ingest", f"upload {i}".encode(), headers={"x-dermascan-attempt": 2})
    await before.publish("dermascan.ingest", b"transient", persistent=False)
    # the process dies here: nothing was consumed, nothing closed

    after = MemoryBus(journal=tmp_path / "queues")
    assert [d.body for d in after.pending("dermascan.ingest")] == [b"upload 0", b"upload 1", b"upload 2"]
    await after.declare_queue("dermascan.ingest", max_length=10)
    again = await consumed(after, "dermascan.ingest", 3)
    assert [d.body for d in again] == [b"upload 0", b"upload 1", b"upload 2"]  # oldest first
    assert all(d.redelivered for d in again) and again[0].headers == {"x-dermascan-attempt": 2}

    third = MemoryBus(journal=tmp_path / "queues")  # handled messages are gone for good
    assert third.pending("dermascan.ingest") == []


async def test_a_message_whose_write_never_finished_is_swept_not_delivered(tmp_path: Path) -> None:
    before = MemoryBus(journal=tmp_path / "queues")
    await before.declare_queue("dermascan.ingest")
    await before.publish("dermascan.ingest", b"whole")
    folder = next((tmp_path / "queues").iterdir())
    half = folder / f"{TEMP_PREFIX}99999999999999999999-x.json.0a1b2c"  # killed mid-write
    half.write_bytes(b'{"body": "aGFs')
    # the process dies here: publish had not returned for the second message

    after = MemoryBus(journal=tmp_path / "queues")
    assert [d.body for d in after.pending("dermascan.ingest")] == [b"whole"]
    assert not half.exists()


async def test_a_message_whose_handler_was_running_at_the_crash_comes_back(tmp_path: Path) -> None:
    before = MemoryBus(journal=tmp_path / "queues")
    await before.declare_queue("dermascan.train")
    started = asyncio.Event()

    async def working(_: Delivery) -> None:
        started.set()
        await asyncio.Event().wait()

    subscription = await before.consume("dermascan.train", working, prefetch=1)
    await before.publish("dermascan.train", b"train job 1")
    await asyncio.wait_for(started.wait(), 5)
    # killed mid-handler: a bus started afresh on the same journal has the message again
    pending = MemoryBus(journal=tmp_path / "queues").pending("dermascan.train")
    assert [d.body for d in pending] == [b"train job 1"]
    for task in other_pending_tasks():  # (only to end the test: a kill -9 runs no clean-up)
        task.cancel()
    del subscription


async def test_a_dead_lettered_or_expired_message_is_not_delivered_again(tmp_path: Path) -> None:
    bus = MemoryBus(journal=tmp_path / "queues")
    await bus.declare_queue("jobs")

    async def broken(_: Delivery) -> None:
        raise ValueError("poison")

    subscription = await bus.consume("jobs", broken, prefetch=1)
    await bus.publish("jobs", b"poison")
    for _ in range(100):
        if (await bus.queue_stats("jobs.dead")).messages == 1:
            break
        await asyncio.sleep(0.01)
    await subscription.cancel()
    await bus.publish("jobs", b"short-lived", expiration=0.05)
    await asyncio.sleep(0.1)
    assert MemoryBus(journal=tmp_path / "queues").pending("jobs") == []


async def test_dead_letter_queues_are_bounded_in_bytes_as_well_as_count() -> None:
    bus = MemoryBus()
    await bus.declare_queue("predict")
    image = b"\xff" * (8 * 1024 * 1024)

    async def expired_reply(_: Delivery) -> None:
        raise ValueError("nobody waits for this prediction any more")

    subscription = await bus.consume("predict", expired_reply, prefetch=1)
    for _ in range(12):  # 96 MiB of images
        await bus.publish("predict", image, persistent=False)
    for _ in range(200):
        if not bus.pending("predict"):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    await subscription.cancel()
    kept = (await bus.queue_stats("predict.dead")).messages
    assert kept * len(image) <= topology.DEAD_QUEUE_MAX_BYTES and kept == 8, kept  # the newest 64 MiB


async def test_waiting_for_a_closed_bus_fails_instead_of_hanging() -> None:
    bus = MemoryBus()
    await bus.wait_connected(timeout=0.1)  # an in-memory bus is connected from the start
    await bus.close()
    with pytest.raises(BrokerUnavailable, match="closed"):
        await bus.wait_connected()
