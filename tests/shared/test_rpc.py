"""The caller's side of RPC (shared/bus/rpc.py): a reply is matched to its call whenever it comes."""

from __future__ import annotations

import asyncio

import pytest

from shared.bus.rpc import PendingReplies
from shared.errors import DeadlineExceeded

pytestmark = pytest.mark.timeout(10)


async def test_a_reply_that_comes_before_the_publish_is_confirmed_is_the_answer() -> None:
    """A worker may answer before the broker confirms the request to the gateway: the reply is
    kept for the call, which returns it once the publish returns."""
    replies = PendingReplies("me")

    async def publish(correlation_id: str) -> None:
        replies.resolve(correlation_id, b"early")
        await asyncio.sleep(0.05)  # the confirm, still on its way

    assert await replies.call(publish, queue="q", timeout=1) == b"early"
    replies.resolve("unknown", b"nobody waits")  # dropped, not an error


async def test_a_refused_publish_fails_the_call_at_once() -> None:
    replies = PendingReplies("me")
    loop = asyncio.get_running_loop()

    async def publish(_: str) -> None:
        raise ConnectionError("refused")

    began = loop.time()
    with pytest.raises(ConnectionError):
        await replies.call(publish, queue="q", timeout=5)
    assert loop.time() - began < 1


async def test_the_deadline_counts_from_the_publish_and_cancels_the_wait() -> None:
    replies = PendingReplies("me")
    loop = asyncio.get_running_loop()

    async def slow_publish(_: str) -> None:
        await asyncio.sleep(0.2)  # a slow confirm is the publish's own bound, not the reply's

    began = loop.time()
    with pytest.raises(DeadlineExceeded):
        await replies.call(slow_publish, queue="q", timeout=0.3)
    assert 0.45 <= loop.time() - began < 1.5
