"""The caller's side of RPC over a bus: correlation id -> future of the reply, with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from shared.errors import DeadlineExceeded, DermaScanError
from shared.wire import new_id


class PendingReplies:
    """Futures of the replies one bus is waiting for. Loop-only."""

    def __init__(self, reply_to: str) -> None:
        self.reply_to = reply_to
        self._futures: dict[str, asyncio.Future[bytes]] = {}

    async def call(self, publish: Callable[[str], Awaitable[None]], *, queue: str, timeout: float) -> bytes:
        """Run `publish(correlation_id)` and wait up to `timeout` s for the matching reply.
        Raises DeadlineExceeded, or what `publish` raised."""
        correlation_id = new_id()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._futures[correlation_id] = future
        try:
            await publish(correlation_id)
            async with asyncio.timeout(timeout):  # wakes with the reply, not a turn of the loop later
                return await future
        except TimeoutError:
            raise DeadlineExceeded(f"no reply from {queue!r} within {timeout:g} s") from None
        finally:
            self._futures.pop(correlation_id, None)

    def resolve(self, correlation_id: str | None, body: bytes) -> None:
        """Hand a reply to its caller; replies nobody waits for any more are dropped."""
        future = self._futures.get(correlation_id or "")
        if future is not None and not future.done():
            future.set_result(body)

    def fail_all(self, error: DermaScanError) -> None:
        for future in self._futures.values():
            if not future.done():
                future.set_exception(error)
