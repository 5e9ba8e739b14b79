"""One contract, two buses: everything here runs against real RabbitMQ and the in-memory bus."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared.bus import Delivery, MessageBus, QueueFull, Unroutable
from shared.bus.topology import QueueSpec, Topology, declare
from shared.errors import DeadlineExceeded
from shared.settings import CommonSettings

pytestmark = pytest.mark.timeout(30)


async def published(bus: MessageBus, queue: str, body: bytes, headers: dict[str, object],
                    prefetch: int) -> Delivery:
    """What a consumer of a fresh `queue` gets of one message published to it."""
    await bus.declare_queue(queue)
    got: asyncio.Queue[Delivery] = asyncio.Queue()

    async def handler(delivery: Delivery) -> None:
        await got.put(delivery)

    await bus.consume(queue, handler, prefetch=prefetch)
    await bus.publish(queue, body, headers=headers)
    return await asyncio.wait_for(got.get(), 5)


async def test_published_messages_reach_a_consumer(bus: MessageBus, unique: str) -> None:
    delivery = await published(bus, unique, b"hello", {"x-kind": "greeting"}, prefetch=4)
    assert delivery.body == b"hello"
    assert delivery.headers["x-kind"] == "greeting"


HEADERS: dict[str, object] = {"text": "jpeg", "count": 3, "big": 2**40, "flag": True, "nothing": None,
                               "unicode": "mélanome", "time": repr(1765000000.123456)}


async def test_headers_of_every_kind_reach_the_consumer_unchanged(bus: MessageBus, unique: str) -> None:
    delivery = await published(bus, unique, bytes(range(256)), HEADERS, prefetch=1)
    assert delivery.body == bytes(range(256)) and delivery.headers == HEADERS


async def test_an_rpc_call_carries_its_headers_to_the_consumer(bus: MessageBus, unique: str) -> None:
    await bus.declare_queue(unique)

    async def echo_headers(delivery: Delivery) -> None:
        await bus.reply(delivery, repr(sorted(delivery.headers.items())).encode() + delivery.body)

    await bus.consume(unique, echo_headers, prefetch=1)
    reply = await bus.call(unique, b"|raw", timeout=5, headers=HEADERS)
    assert reply == repr(sorted(HEADERS.items())).encode() + b"|raw"


async def test_publishing_to_an_undeclared_queue_is_refused(bus: MessageBus, unique: str) -> None:
    with pytest.raises(Unroutable):
        await bus.publish(f"{unique}-nowhere", b"lost?")


async def test_a_full_queue_refuses_instead_of_dropping(bus: MessageBus, unique: str) -> None:
    await bus.declare_queue(unique, max_length=2)
    await bus.publish(unique, b"1")
    await bus.publish(unique, b"2")
    with pytest.raises(QueueFull):
        await bus.publish(unique, b"3")
    assert (await bus.queue_stats(unique)).messages == 2


async def test_the_topology_declares_the_predict_queue_bounded_by_the_settings(bus: MessageBus,
                                                                               unique: str) -> None:
    await bus.wait_connected(timeout=5)  # connected already: returns at once
    topology = Topology.of(CommonSettings(predict_queue=f"{unique}.predict", ingest_queue=f"{unique}.ingest",
                                          train_queue=f"{unique}.train", max_queue_length=2))
    assert topology.predict == QueueSpec(f"{unique}.predict", max_length=2)
    assert topology.ingest.max_length is None and topology.train.max_length is None
    await declare(bus, *topology.queues)
    for body in (b"1", b"2"):
        await bus.publish(topology.predict.name, body)
    with pytest.raises(QueueFull):
        await bus.publish(topology.predict.name, b"3")
    for queue in (topology.ingest, topology.train):  # unbounded, and declared
        await bus.publish(queue.name, b"job")
        assert (await bus.queue_stats(queue.name)).messages == 1


async def test_rpc_call_gets_the_matching_reply(bus: MessageBus, unique: str) -> None:
    await bus.declare_queue(unique)

    async def echo(delivery: Delivery) -> None:
        await asyncio.sleep(0.01 * (delivery.body[0] % 3))  # answer out of order
        await bus.reply(delivery, delivery.body.upper())

    await bus.consume(unique, echo, prefetch=8)
    bodies = [f"{chr(97 + i)}-request".encode() for i in range(8)]
    replies = await asyncio.gather(*(bus.call(unique, b, timeout=5) for b in bodies))
    assert replies == [b.upper() for b in bodies]


async def test_replies_given_together_each_reach_their_caller(bus: MessageBus, unique: str) -> None:
    await bus.declare_queue(unique)
    waiting: list[Delivery] = []

    async def answer_in_one_go(delivery: Delivery) -> None:
        waiting.append(delivery)
        if len(waiting) == 8:  # like a micro-batch: every reply in the same turn of the loop
            for request in waiting:
                await bus.reply(request, request.body[::-1])

    await bus.consume(unique, answer_in_one_go, prefetch=8)
    bodies = [f"request-{i}".encode() for i in range(8)]
    replies = await asyncio.gather(*(bus.call(unique, b, timeout=5) for b in bodies))
    assert replies == [b[::-1] for b in bodies]


async def test_a_reply_to_a_caller_that_is_gone_is_dropped(bus: MessageBus, unique: str) -> None:
    await bus.declare_queue(unique)
    seen: list[bytes] = []

    async def echo(delivery: Delivery) -> None:
        seen.append(delivery.body)
        await bus.reply(delivery, delivery.body.upper())

    await bus.consume(unique, echo, prefetch=1)
    await bus.reply(Delivery(b"question", correlation_id="c1", reply_to=f"{unique}-gone"), b"answer")
    # the bus works on, and the next caller gets its own answer, not the orphan
    assert await bus.call(unique, b"next question", timeout=5) == b"NEXT QUESTION"
    assert seen == [b"next question"]  # the orphan reached no consumer
    for kept_somewhere in (f"{unique}-gone", f"{unique}-gone.dead"):
        with pytest.raises(Unroutable):  # no queue was made for it
            await bus.queue_stats(kept_somewhere)
    assert (await bus.queue_stats(f"{unique}.dead")).messages == 0  # nor was it dead-lettered


async def test_a_dropped_reply_is_not_logged_as_an_error(
        bus: MessageBus, unique: str, caplog: pytest.LogCaptureFixture) -> None:
    await bus.declare_queue(unique)

    async def echo(delivery: Delivery) -> None:
        await bus.reply(delivery, delivery.body.upper())

    await bus.consume(unique, echo, prefetch=1)
    with caplog.at_level(logging.WARNING):
        await bus.reply(Delivery(b"question", correlation_id="c1", reply_to=f"{unique}-gone"), b"answer")
        assert await bus.call(unique, b"next question", timeout=5) == b"NEXT QUESTION"
    assert [r.getMessage() for r in caplog.records] == []  # nothing went wrong: nobody waits for it


async def test_an_rpc_call_whose_publish_is_refused_fails_at_once(bus: MessageBus, unique: str) -> None:
    """The broker's refusal (here: no such queue; a full one, a lost connection alike) is the
    call's answer as soon as it comes, not a deadline later: nothing accepted may be waited on in
    vain, and nothing refused may look accepted."""
    await bus.declare_queue(unique, max_length=1)
    await bus.publish(unique, b"fills it")
    loop = asyncio.get_running_loop()
    for queue, refusal in ((f"{unique}-nowhere", Unroutable), (unique, QueueFull)):
        began = loop.time()
        with pytest.raises(refusal):
            await bus.call(queue, b"refused", timeout=5)
        assert loop.time() - began < 2.5


async def test_rpc_call_times_out_and_the_stale_request_expires(bus: MessageBus, unique: str) -> None:
    await bus.declare_queue(unique)
    with pytest.raises(DeadlineExceeded):
        await bus.call(unique, b"nobody listens", timeout=0.3)
    await asyncio.sleep(0.3)
    assert (await bus.queue_stats(unique)).messages == 0  # expired in the queue, not delivered later


async def test_a_failing_handler_dead_letters_and_the_consumer_lives_on(bus: MessageBus, unique: str) -> None:
    await bus.declare_queue(unique)
    seen: asyncio.Queue[bytes] = asyncio.Queue()

    async def handler(delivery: Delivery) -> None:
        if delivery.body == b"poison":
            raise ValueError("cannot handle this")
        await seen.put(delivery.body)

    await bus.consume(unique, handler, prefetch=1)
    await bus.publish(unique, b"poison")
    await bus.publish(unique, b"fine")
    assert await asyncio.wait_for(seen.get(), 5) == b"fine"
    for _ in range(50):
        if (await bus.queue_stats(f"{unique}.dead")).messages == 1:
            break
        await asyncio.sleep(0.05)
    assert (await bus.queue_stats(f"{unique}.dead")).messages == 1


async def test_messages_handled_out_of_order_are_all_acknowledged(bus: MessageBus, unique: str) -> None:
    await bus.declare_queue(unique)
    handled: list[bytes] = []
    all_handled = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        await asyncio.sleep(0.002 * (delivery.body[0] % 5))  # finish out of order, often together
        handled.append(delivery.body)
        if len(handled) == 60:
            all_handled.set()

    subscription = await bus.consume(unique, handler, prefetch=8)
    for i in range(60):
        await bus.publish(unique, bytes([i]))
    await asyncio.wait_for(all_handled.wait(), 10)  # an unacknowledged message would hold its slot for good
    await subscription.cancel()  # what is still unacknowledged goes back to the queue here
    assert (await bus.queue_stats(unique)).messages == 0
    assert sorted(handled) == [bytes([i]) for i in range(60)]


async def test_a_slow_message_does_not_hold_back_the_others(bus: MessageBus, unique: str) -> None:
    await bus.declare_queue(unique)
    others_done, all_done = asyncio.Event(), asyncio.Event()
    handled: list[bytes] = []

    async def handler(delivery: Delivery) -> None:
        if delivery.body == b"slow":
            await others_done.wait()  # done only after 20 later messages passed a 3-slot window
        handled.append(delivery.body)
        if len(handled) == 20:
            others_done.set()
        if len(handled) == 21:
            all_done.set()

    subscription = await bus.consume(unique, handler, prefetch=3)
    for body in [b"slow", *(f"fast-{i}".encode() for i in range(20))]:
        await bus.publish(unique, body)
    await asyncio.wait_for(others_done.wait(), 10)
    await asyncio.wait_for(all_done.wait(), 10)
    await subscription.cancel()
    assert (await bus.queue_stats(unique)).messages == 0
    assert handled[-1] == b"slow"


async def test_broadcast_reaches_every_subscriber(bus: MessageBus, unique: str) -> None:
    inboxes: list[asyncio.Queue[bytes]] = [asyncio.Queue(), asyncio.Queue()]
    for inbox in inboxes:
        async def handler(delivery: Delivery, inbox: asyncio.Queue[bytes] = inbox) -> None:
            await inbox.put(delivery.body)

        await bus.subscribe(unique, handler)
    await bus.broadcast(unique, b"model v2 promoted")
    for inbox in inboxes:
        assert await asyncio.wait_for(inbox.get(), 5) == b"model v2 promoted"


async def test_queue_stats_count_consumers(bus: MessageBus, unique: str) -> None:
    await bus.declare_queue(unique)

    async def handler(_: Delivery) -> None:
        return None

    subscription = await bus.consume(unique, handler, prefetch=1)
    assert (await bus.queue_stats(unique)).consumers == 1
    await subscription.cancel()
    with pytest.raises(Unroutable):
        await bus.queue_stats(f"{unique}-missing")
