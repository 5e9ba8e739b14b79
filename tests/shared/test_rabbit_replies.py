"""RabbitMQ specifics of replies: the replies of one turn travel as one message per caller's
reply queue, and every caller still gets exactly its own."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from shared.bus import Delivery, connect_bus, rabbitmq

pytestmark = pytest.mark.timeout(30)


def test_a_batched_reply_splits_back_into_its_replies() -> None:
    replies = [("c1", b'{"label": "melanoma"}'), ("c2", b""), ("c3", b"\x00binary\xff")]
    message = rabbitmq._reply_message(replies)
    assert message.correlation_id is None
    assert rabbitmq._split_replies(message) == replies  # type: ignore[arg-type]  # an outgoing message, read back
    single = rabbitmq._reply_message(replies[:1])
    assert (single.correlation_id, single.body) == ("c1", replies[0][1])
    assert rabbitmq._split_replies(single) == replies[:1]  # type: ignore[arg-type]  # as above


async def test_replies_to_two_gateways_in_one_turn_travel_as_two_messages(
    rabbit_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[int] = []
    make_message = rabbitmq._reply_message

    def counted(replies: list[tuple[str, bytes]]) -> aio_pika.Message:
        sent.append(len(replies))
        return make_message(replies)

    monkeypatch.setattr(rabbitmq, "_reply_message", counted)
    worker, gateway_a, gateway_b = [await connect_bus(rabbit_url) for _ in range(3)]
    waiting: list[Delivery] = []

    async def answer_in_one_go(delivery: Delivery) -> None:
        waiting.append(delivery)
        if len(waiting) == 8:
            for request in waiting:
                await worker.reply(request, request.body.upper())

    try:
        await worker.declare_queue(unique)
        await worker.consume(unique, answer_in_one_go, prefetch=8)
        a_bodies = [f"a-{i}".encode() for i in range(4)]
        b_bodies = [f"b-{i}".encode() for i in range(4)]
        replies = await asyncio.gather(*(gateway_a.call(unique, b, timeout=5) for b in a_bodies),
                                       *(gateway_b.call(unique, b, timeout=5) for b in b_bodies))
    finally:
        for bus in (worker, gateway_a, gateway_b):
            await bus.close()
    assert replies == [b.upper() for b in a_bodies + b_bodies]
    assert sent == [4, 4]
