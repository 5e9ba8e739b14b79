"""Dynamic micro-batching: requests that arrive while the model is busy share its next call.

A request that arrives alone runs at once. While other requests are still being decoded
(announced with `incoming()`), a batch waits up to `max_wait_ms` for them, never longer. Each
batch is told, as it starts, what it leaves behind (`Backlog`: requests still waiting, batches
running beside it), so that the model call can size itself to the load (`inference_worker.threads`).

The batching loops are owned: when one dies of an unexpected error (say, the `on_batch`
metrics callback raising), every request waiting in the batcher at that moment fails at once
with `BatcherFailed` instead of waiting for its deadline, the error is logged, and the loop is
restarted. Restarts are bounded: after `max_restarts` deaths within `restart_window_s` seconds
the batcher gives up, and every later `submit` fails at once with `BatcherFailed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, TypeVar

from shared.errors import ServiceUnavailable

log = logging.getLogger(__name__)

K = TypeVar("K")
T = TypeVar("T")
R = TypeVar("R")


class BatcherFailed(ServiceUnavailable):
    """The batcher could not run this request: its loop died (the cause is chained) or it is
    closed. Retryable: nothing was wrong with the request itself."""

    default_code = "batcher_failed"


@dataclass(frozen=True)
class Backlog:
    """The load a batch starts into, counted on the loop as it is handed to the executor."""

    #: Requests not in this batch: queued, held back for another model, or still being decoded.
    waiting: int
    #: Other batches in the model at that moment.
    running: int


@dataclass
class _Item(Generic[K, T, R]):
    key: K
    value: T
    future: asyncio.Future[tuple[R, int]]


class MicroBatcher(Generic[K, T, R]):
    """Groups `submit`ted values with the same key into calls of `run(key, values, backlog)`.

    `run` executes in `executor` and must return one result per value, in order (`backlog`: the
    load the batch started into, see `Backlog`); when it
    raises, every future of that batch gets the exception. Up to `concurrency` batches run
    at once. `on_batch(size, seconds)` is called after each successful batch. A loop that
    dies otherwise is restarted as the module docstring says. Loop-only.
    """

    def __init__(
        self,
        run: Callable[[K, Sequence[T], Backlog], Iterable[R]],  # one result per item, in order
        *,
        max_batch_size: int,
        max_wait_ms: float,
        executor: Executor | None = None,
        concurrency: int = 1,
        on_batch: Callable[[int, float], None] | None = None,
        max_restarts: int = 5,
        restart_window_s: float = 60.0,
    ) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self._executor = executor
        self._queue: asyncio.Queue[_Item[K, T, R]] = asyncio.Queue()
        self._held: list[_Item[K, T, R]] = []
        self._incoming = 0
        self._running = 0  # batches handed to the executor and not yet back
        self._arrived = asyncio.Event()
        self._on_batch = on_batch
        self.max_restarts, self.restart_window = max_restarts, restart_window_s
        self._deaths: deque[float] = deque()
        #: Why the batcher refuses work (closed, or too many loop deaths); None while it serves.
        self._refusal: BatcherFailed | None = None
        #: Items each loop has taken from the queue and not yet answered.
        self._claimed: dict[asyncio.Task[None], list[_Item[K, T, R]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        for _ in range(concurrency):
            self._start_loop()

    def _start_loop(self) -> None:
        task = asyncio.create_task(self._loop(), name="micro-batcher")
        self._claimed[task] = []
        self._tasks.add(task)
        task.add_done_callback(self._on_loop_done)

    def _on_loop_done(self, task: asyncio.Task[None]) -> None:
        """Fail what waited on a dead loop, then restart it (bounded)."""
        self._tasks.discard(task)
        claimed = self._claimed.pop(task, [])
        if task.cancelled():  # close() did it
            return
        cause = task.exception() or RuntimeError("the loop returned")
        now = asyncio.get_running_loop().time()
        self._deaths.append(now)
        while self._deaths and self._deaths[0] < now - self.restart_window:
            self._deaths.popleft()
        error = BatcherFailed(f"the micro-batcher's loop failed: {cause!r}")
        error.__cause__ = cause
        waiting = self._drain(claimed)
        for item in waiting:
            item.future.set_exception(error)
        if self._refusal is not None:  # closing, or already given up
            log.error("micro-batcher loop died; %d waiting requests failed", len(waiting), exc_info=cause)
        elif len(self._deaths) <= self.max_restarts:
            log.error("micro-batcher loop died; %d waiting requests failed; restarting it",
                      len(waiting), exc_info=cause)
            self._start_loop()
        else:
            log.error("micro-batcher loop died %d times in %g s; %d waiting requests failed; "
                      "not restarting it: every later request fails", len(self._deaths),
                      self.restart_window, len(waiting), exc_info=cause)
            self._refusal = BatcherFailed(
                f"the micro-batcher stopped after {len(self._deaths)} loop failures "
                f"in {self.restart_window:g} s; last: {cause!r}")
            self._refusal.__cause__ = cause

    def _drain(self, claimed: list[_Item[K, T, R]]) -> list[_Item[K, T, R]]:
        """Take every queued or held item, plus `claimed`; return those not yet answered."""
        items = [*claimed, *self._held]
        self._held.clear()
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        unique = {id(item): item for item in items}.values()
        return [item for item in unique if not item.future.done()]

    @contextlib.contextmanager
    def incoming(self) -> Iterator[None]:
        """Mark a request as on its way (being decoded) so a forming batch may wait for it."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1
            self._arrived.set()

    async def submit(self, key: K, value: T) -> tuple[R, int]:
        """Queue `value`; returns (its result, size of the batch it ran in). Raises what `run`
        raised for its batch, or BatcherFailed (at once when the batcher is closed or gave up)."""
        if self._refusal is not None:
            raise self._refusal
        loop = asyncio.get_running_loop()
        item: _Item[K, T, R] = _Item(key, value, loop.create_future())
        self._queue.put_nowait(item)
        self._arrived.set()
        return await item.future

    @property
    def idle(self) -> bool:
        """Nothing queued, held, being decoded or in the model: a value submitted now runs alone."""
        return not (self._running or self._incoming or self._held or self._queue.qsize())

    def _take(self, claimed: list[_Item[K, T, R]]) -> _Item[K, T, R] | None:
        if self._held:
            item = self._held.pop(0)
        else:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return None
        claimed.append(item)
        return item

    async def _form_batch(self, claimed: list[_Item[K, T, R]]) -> list[_Item[K, T, R]]:
        loop = asyncio.get_running_loop()
        first = self._take(claimed)
        if first is None:
            first = await self._queue.get()
            claimed.append(first)
        batch: list[_Item[K, T, R]] = [first]
        skipped: list[_Item[K, T, R]] = []
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch_size:
            item = self._take(claimed)
            if item is not None:
                (batch if item.key == first.key else skipped).append(item)
                continue
            remaining = deadline - loop.time()
            if self._incoming == 0 or remaining <= 0:
                break
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        self._held[:0] = skipped
        claimed[:] = batch
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        claimed = self._claimed[task]
        while True:
            claimed.clear()
            batch = await self._form_batch(claimed)
            live = [item for item in batch if not item.future.done()]
            if not live:
                continue
            backlog = Backlog(waiting=self._queue.qsize() + len(self._held) + self._incoming,
                              running=self._running)
            started = time.perf_counter()  # uvloop's loop.time() counts whole milliseconds
            self._running += 1
            try:
                results = await loop.run_in_executor(
                    self._executor, self._run, live[0].key, [item.value for item in live], backlog
                )
            except Exception as exc:  # noqa: BLE001 - whatever the model raised, every caller gets it
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            finally:
                self._running -= 1
            if self._on_batch is not None:
                self._on_batch(len(live), time.perf_counter() - started)
            for item, result in zip(live, results, strict=True):
                if not item.future.done():
                    item.future.set_result((result, len(live)))

    async def close(self) -> None:
        """Stop forming batches; queued and running requests fail with BatcherFailed, and so
        does every later `submit`."""
        self._refusal = self._refusal or BatcherFailed("the batcher was closed")
        tasks = list(self._tasks)
        claimed = [item for items in self._claimed.values() for item in items]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for item in self._drain(claimed):
            item.future.set_exception(BatcherFailed("the batcher was closed"))
