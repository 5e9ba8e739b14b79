"""What the gateway knows of the workers: the heartbeats they broadcast, forgotten when they stop."""

from __future__ import annotations

import asyncio

import pydantic
import pytest

from gateway import workers
from gateway.workers import WorkerDirectory
from shared.bus import Delivery
from shared.bus.memory import MemoryBus
from shared.messages import WorkerStatus, encode

pytestmark = pytest.mark.timeout(30)


class Clock:
    """Stands in for the `time` module inside gateway.workers: a monotonic clock we move."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(workers, "time", clock)
    return clock


def heartbeat(worker_id: str, model_version: str | None = "v1", interval_s: float = 5.0) -> Delivery:
    status = WorkerStatus(worker_id=worker_id, model_version=model_version,
                          classes=["melanoma"] if model_version else [], interval_s=interval_s)
    return Delivery(encode(status))


async def test_heartbeats_on_the_status_exchange_list_the_workers() -> None:
    bus = MemoryBus()
    directory = WorkerDirectory(ttl_factor=3)
    await bus.subscribe("dermascan.status", directory.on_status)
    for worker_id in ("w2", "w1"):
        await bus.broadcast("dermascan.status", heartbeat(worker_id).body)
    for _ in range(100):
        if len(directory.live()) == 2:
            break
        await asyncio.sleep(0.01)
    assert [w.worker_id for w in directory.live()] == ["w1", "w2"]  # by id, whatever the arrival order
    await bus.close()


async def test_the_latest_heartbeat_of_a_worker_replaces_its_earlier_one(clock: Clock) -> None:
    directory = WorkerDirectory(ttl_factor=3)
    await directory.on_status(heartbeat("w1", model_version=None))
    assert directory.serving() == [] and [w.worker_id for w in directory.live()] == ["w1"]
    clock.now += 1
    await directory.on_status(heartbeat("w1", model_version="v2"))
    assert [(w.worker_id, w.model_version) for w in directory.live()] == [("w1", "v2")]
    assert [w.worker_id for w in directory.serving()] == ["w1"]


async def test_a_worker_silent_for_ttl_factor_intervals_is_gone(clock: Clock) -> None:
    directory = WorkerDirectory(ttl_factor=3)
    await directory.on_status(heartbeat("w1", interval_s=5))
    await directory.on_status(heartbeat("w2", interval_s=5))
    clock.now += 10
    await directory.on_status(heartbeat("w2", interval_s=5))  # w2 keeps beating, w1 went quiet
    clock.now += 5  # w1 silent for exactly 3 intervals: still counted
    assert [w.worker_id for w in directory.live()] == ["w1", "w2"]
    clock.now += 0.01
    assert [w.worker_id for w in directory.live()] == ["w2"]
    assert [w.worker_id for w in directory.serving()] == ["w2"]
    clock.now += 15.01
    assert directory.live() == [] and directory.serving() == []


async def test_each_worker_is_judged_by_its_own_interval(clock: Clock) -> None:
    directory = WorkerDirectory(ttl_factor=2)
    await directory.on_status(heartbeat("fast", interval_s=1))
    await directory.on_status(heartbeat("slow", interval_s=30))
    clock.now += 10
    assert [w.worker_id for w in directory.live()] == ["slow"]


async def test_a_forgotten_worker_comes_back_with_its_next_heartbeat(clock: Clock) -> None:
    directory = WorkerDirectory(ttl_factor=3)
    await directory.on_status(heartbeat("w1", interval_s=1))
    clock.now += 60
    assert directory.live() == []
    await directory.on_status(heartbeat("w1", interval_s=1))
    assert [w.worker_id for w in directory.live()] == ["w1"]


async def test_a_malformed_heartbeat_is_refused_and_changes_nothing(clock: Clock) -> None:
    directory = WorkerDirectory(ttl_factor=3)
    await directory.on_status(heartbeat("w1"))
    with pytest.raises(pydantic.ValidationError):
        await directory.on_status(Delivery(b'{"worker_id": "w2", "model_version": "v1", "interval_s": "?"}'))
    assert [w.worker_id for w in directory.live()] == ["w1"]
