"""The micro-batcher's rules, with a fake model that records every call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import pytest

from inference_worker.batching import Backlog, BatcherFailed, MicroBatcher

pytestmark = pytest.mark.timeout(10)


class FakeModel:
    def __init__(self, delay: float = 0.0, fail_on: int | None = None) -> None:
        self.calls: list[list[int]] = []
        self.backlogs: dict[tuple[int, ...], Backlog] = {}  # what each batch started into
        self.delay, self.fail_on = delay, fail_on

    def __call__(self, key: str, values: Sequence[int], backlog: Backlog) -> list[int]:
        self.calls.append(list(values))
        self.backlogs[tuple(values)] = backlog
        time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in values:
            raise ValueError("model blew up")
        return [v * 10 for v in values]


async def test_a_request_that_arrives_alone_runs_at_once() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=500)
    started = time.perf_counter()
    assert await batcher.submit("m", 1) == (10, 1)
    assert time.perf_counter() - started < 0.1  # far below max_wait
    await batcher.close()


async def test_requests_queued_while_the_model_is_busy_share_one_call() -> None:
    model = FakeModel(delay=0.05)
    batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=0)
    first = asyncio.create_task(batcher.submit("m", 0))
    await asyncio.sleep(0.01)  # the model is now busy with [0]
    rest = await asyncio.gather(*(batcher.submit("m", i) for i in range(1, 6)))
    await first
    assert model.calls == [[0], [1, 2, 3, 4, 5]]
    assert rest == [(i * 10, 5) for i in range(1, 6)]
    await batcher.close()


async def test_each_batch_is_told_the_load_it_starts_into() -> None:
    model = FakeModel(delay=0.1)
    batcher = MicroBatcher(model, max_batch_size=2, max_wait_ms=0, concurrency=2)
    await batcher.submit("m", 0)
    first = asyncio.create_task(batcher.submit("m", 1))
    await asyncio.sleep(0.02)  # the model is now busy with [1]
    await asyncio.gather(first, *(batcher.submit("m", i) for i in range(2, 7)))
    assert model.backlogs[(0,)] == Backlog(waiting=0, running=0)  # alone
    assert model.backlogs[(1,)] == Backlog(waiting=0, running=0)
    assert model.backlogs[(2, 3)] == Backlog(waiting=3, running=1)  # 4, 5, 6 behind it; [1] beside it
    await batcher.close()


async def test_requests_still_being_decoded_count_as_waiting() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch_size=1, max_wait_ms=0)
    with batcher.incoming():  # another request is being decoded meanwhile
        assert await batcher.submit("m", 7) == (70, 1)
    assert model.backlogs[(7,)] == Backlog(waiting=1, running=0)
    await batcher.close()


async def test_batches_never_exceed_max_batch_size() -> None:
    model = FakeModel(delay=0.02)
    batcher = MicroBatcher(model, max_batch_size=4, max_wait_ms=0)
    results = await asyncio.gather(*(batcher.submit("m", i) for i in range(10)))
    assert [r for r, _ in results] == [i * 10 for i in range(10)]
    assert max(len(c) for c in model.calls) <= 4
    assert sum(len(c) for c in model.calls) == 10
    await batcher.close()


async def test_a_forming_batch_waits_for_requests_still_being_decoded() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=200)

    async def decode_then_submit(value: int, decode_s: float) -> tuple[int, int]:
        with batcher.incoming():
            await asyncio.sleep(decode_s)
        return await batcher.submit("m", value)

    results = await asyncio.gather(decode_then_submit(1, 0.0), decode_then_submit(2, 0.05))
    assert model.calls == [[1, 2]]
    assert list(results) == [(10, 2), (20, 2)]
    await batcher.close()


async def test_the_wait_is_bounded_by_max_wait() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=20)

    async def slow_decode() -> None:
        with batcher.incoming():
            await asyncio.sleep(0.5)

    slow = asyncio.create_task(slow_decode())
    started = time.perf_counter()
    await batcher.submit("m", 1)
    assert time.perf_counter() - started < 0.3
    slow.cancel()
    await batcher.close()


async def test_a_failing_batch_fails_only_its_own_requests() -> None:
    model = FakeModel(delay=0.03, fail_on=13)
    batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=0)
    busy = asyncio.create_task(batcher.submit("m", 13))
    await asyncio.sleep(0.01)
    later = asyncio.create_task(batcher.submit("m", 2))
    with pytest.raises(ValueError):
        await busy
    assert await later == (20, 1)  # the next batch is unaffected
    await batcher.close()


async def test_different_models_are_never_mixed_in_one_batch() -> None:
    model = FakeModel(delay=0.03)
    batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=0)
    first = asyncio.create_task(batcher.submit("old", 0))
    await asyncio.sleep(0.01)
    rest = await asyncio.gather(batcher.submit("old", 1), batcher.submit("new", 2), batcher.submit("old", 3))
    await first
    assert [1, 3] in model.calls and [2] in model.calls
    assert [r for r, _ in rest] == [10, 20, 30]
    await batcher.close()


async def test_a_full_batch_runs_at_once_even_while_more_are_being_decoded() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch_size=4, max_wait_ms=5000)

    async def slow_decode() -> None:
        with batcher.incoming():
            await asyncio.sleep(2.0)

    slow = asyncio.create_task(slow_decode())
    started = time.perf_counter()
    results = await asyncio.gather(*(batcher.submit("m", i) for i in range(4)))
    assert time.perf_counter() - started < 1.0  # filled by size, not by time
    assert model.calls == [[0, 1, 2, 3]] and results == [(i * 10, 4) for i in range(4)]
    slow.cancel()
    await batcher.close()


class FlakyMetrics:
    """An `on_batch` callback that raises for its first `failures` calls."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    def __call__(self, size: int, seconds: float) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError("metrics backend down")


async def test_a_loop_that_dies_fails_every_waiting_request_at_once_and_serves_the_next(
        caplog: pytest.LogCaptureFixture) -> None:
    model = FakeModel(delay=0.05)
    batcher = MicroBatcher(model, max_batch_size=2, max_wait_ms=0, on_batch=FlakyMetrics(failures=1))
    running = asyncio.create_task(batcher.submit("m", 1))
    await asyncio.sleep(0.01)  # [1] is in the model; the rest wait in the queue
    queued = [asyncio.create_task(batcher.submit("m", i)) for i in (2, 3, 4)]
    with caplog.at_level(logging.ERROR, logger="inference_worker.batching"):
        outcomes = await asyncio.wait_for(asyncio.gather(running, *queued, return_exceptions=True), 1)
    assert all(isinstance(o, BatcherFailed) for o in outcomes), outcomes  # not left to time out
    assert all("metrics backend down" in str(o) for o in outcomes)
    first = outcomes[0]
    assert isinstance(first, BatcherFailed) and isinstance(first.__cause__, OSError)
    assert "loop died; 4 waiting requests failed; restarting it" in caplog.text
    assert "metrics backend down" in caplog.text  # the traceback says why
    assert await asyncio.wait_for(batcher.submit("m", 5), 1) == (50, 1)  # served by the new loop
    await batcher.close()


async def test_a_loop_that_keeps_dying_is_restarted_only_so_often_then_refuses_at_once() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=0, on_batch=FlakyMetrics(failures=99),
                           max_restarts=2, restart_window_s=60)
    for value in range(3):  # the first death and two restarts
        with pytest.raises(BatcherFailed, match="loop failed"):
            await asyncio.wait_for(batcher.submit("m", value), 1)
    with pytest.raises(BatcherFailed, match="stopped after 3 loop failures"):
        await batcher.submit("m", 3)
    assert model.calls == [[0], [1], [2]]  # the refused request never reached the model
    await batcher.close()


async def test_close_fails_running_and_queued_requests_and_refuses_later_ones() -> None:
    model = FakeModel(delay=0.2)
    batcher = MicroBatcher(model, max_batch_size=1, max_wait_ms=0)
    running = asyncio.create_task(batcher.submit("m", 1))
    await asyncio.sleep(0.01)
    queued = asyncio.create_task(batcher.submit("m", 2))
    await asyncio.sleep(0)
    await batcher.close()
    for request in (running, queued):
        with pytest.raises(BatcherFailed, match="closed"):
            await asyncio.wait_for(request, 1)
    with pytest.raises(BatcherFailed, match="closed"):
        await batcher.submit("m", 3)


def test_batch_times_are_timed_finer_than_uvloops_clock() -> None:
    """The worker runs on uvloop, whose loop.time() counts whole milliseconds: batch times (the
    batch-seconds metric, a reply's compute_ms) read from it came out as 5.0, 6.0, 9.0 ms."""
    import uvloop

    seconds: list[float] = []

    async def main() -> None:
        batcher = MicroBatcher(FakeModel(delay=0.0013), max_batch_size=8, max_wait_ms=1,
                               on_batch=lambda size, took: seconds.append(took))
        for value in range(5):
            await batcher.submit("m", value)
        await batcher.close()

    uvloop.run(main())
    assert len(seconds) == 5 and min(seconds) >= 0.0013
    assert any(abs(took * 1000 - round(took * 1000)) > 1e-6 for took in seconds)
