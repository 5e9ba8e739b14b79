"""Dynamic micro-batching: requests that arrive while the model is busy share its next call.

A request that arrives alone runs at once. While other requests are still being decoded
(announced with `incoming()`), a batch waits up to `max_wait_ms` for them, never longer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K")
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Item(Generic[K, T, R]):
    key: K
    value: T
    future: asyncio.Future[tuple[R, int]]
    queued_at: float = field(default=0.0)


class MicroBatcher(Generic[K, T, R]):
    """Groups `submit`ted values with the same key into calls of `run(key, values)`.

    `run` executes in `executor` and must return one result per value, in order; when it
    raises, every future of that batch gets the exception. Up to `concurrency` batches run
    at once. Loop-only.
    """

    def __init__(
        self,
        run: Callable[[K, Sequence[T]], Sequence[R]],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        executor: Executor | None = None,
        concurrency: int = 1,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self._executor = executor
        self._queue: asyncio.Queue[_Item[K, T, R]] = asyncio.Queue()
        self._held: list[_Item[K, T, R]] = []
        self._incoming = 0
        self._arrived = asyncio.Event()
        self._on_batch = on_batch
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(concurrency)]

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
        """Queue `value`; returns (its result, size of the batch it ran in)."""
        loop = asyncio.get_running_loop()
        item: _Item[K, T, R] = _Item(key, value, loop.create_future(), loop.time())
        self._queue.put_nowait(item)
        self._arrived.set()
        return await item.future

    def _take(self) -> _Item[K, T, R] | None:
        if self._held:
            return self._held.pop(0)
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def _form_batch(self) -> list[_Item[K, T, R]]:
        loop = asyncio.get_running_loop()
        first = self._take() or await self._queue.get()
        batch, skipped = [first], []
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch_size:
            item = self._take()
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
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._form_batch()
            live = [item for item in batch if not item.future.done()]
            if not live:
                continue
            started = loop.time()
            try:
                results = await loop.run_in_executor(
                    self._executor, self._run, live[0].key, [item.value for item in live]
                )
            except Exception as exc:
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            if self._on_batch is not None:
                self._on_batch(len(live), loop.time() - started)
            for item, result in zip(live, results, strict=True):
                if not item.future.done():
                    item.future.set_result((result, len(live)))

    async def close(self) -> None:
        """Stop forming batches; queued requests are failed."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while (item := self._take()) is not None:
            if not item.future.done():
                item.future.set_exception(RuntimeError("the batcher was closed"))
