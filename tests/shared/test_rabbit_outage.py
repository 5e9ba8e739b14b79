"""RabbitMQ going away, as the services see it (real RabbitMQ behind a TCP proxy the test cuts):
`connected` says so at once, publishing fails fast instead of hanging, and all comes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import aio_pika
import aiormq
import pytest

from shared.bus import BrokerUnavailable, Delivery, MessageBus, Subscription, connect_bus
from shared.bus.joining import join
from shared.bus.rabbitmq import RabbitBus
from shared.bus.topology import DEAD_LETTER_EXCHANGE, DEAD_QUEUE_ARGUMENTS, DEAD_QUEUE_MAX_BYTES
from tests.support.tcp import Proxy

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def proxy(rabbit_url: str) -> AsyncIterator[Proxy]:
    proxy = Proxy.before(rabbit_url)
    await proxy.up()
    yield proxy
    await proxy.close()


def through(rabbit_url: str, proxy: Proxy) -> str:
    return proxy.reroute(rabbit_url)


async def assert_delivered_after_the_outage(bus: MessageBus, queue: str) -> None:
    """A message published to `queue` now reaches a consumer of it within 5 s."""
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def handler(delivery: Delivery) -> None:
        await got.put(delivery.body)

    await bus.consume(queue, handler, prefetch=1)
    await bus.publish(queue, b"after the outage")
    assert await asyncio.wait_for(got.get(), 5) == b"after the outage"


async def until(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until `condition()` held; fails after `timeout`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"not within {timeout} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_a_lost_broker_is_reported_at_once_and_publishing_fails_fast_until_it_is_back(
        rabbit_url: str, proxy: Proxy, unique: str) -> None:
    bus = await connect_bus(through(rabbit_url, proxy))
    try:
        await bus.declare_queue(unique)
        assert bus.connected
        await proxy.down()
        assert await until(lambda: not bus.connected, timeout=3) < 3
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await bus.publish(unique, b"upload job")
        assert time.monotonic() - started < 1
        await asyncio.sleep(1.0)
        assert not bus.connected  # still reconnecting: not "connected" meanwhile
        with pytest.raises(BrokerUnavailable, match="not reachable after 0.2 s"):
            await bus.wait_connected(timeout=0.2)

        await proxy.up()
        await bus.wait_connected(timeout=15)  # aio-pika retries every 5 s
        assert bus.connected
        await assert_delivered_after_the_outage(bus, unique)
    finally:
        await bus.close()


async def test_a_publish_the_broker_never_confirms_fails_after_the_publish_timeout(
        rabbit_url: str, proxy: Proxy, unique: str) -> None:
    bus = await connect_bus(through(rabbit_url, proxy), publish_timeout_s=1.0)
    try:
        await bus.declare_queue(unique)
        proxy.freeze()  # the connection stays open; nothing comes back
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as refused:
            await bus.publish(unique, b"training job")
        assert 0.9 < time.monotonic() - started < 3
        assert refused.value.status == 503 and "within 1 s" in refused.value.message
        with pytest.raises(BrokerUnavailable):
            await bus.broadcast(f"{unique}.models", b"v2 promoted")
    finally:
        await proxy.down()
        await bus.close()


async def test_dead_letter_queues_are_bounded_in_bytes(rabbit_url: str, unique: str) -> None:
    bus = await connect_bus(rabbit_url)
    connection = await aio_pika.connect(rabbit_url)
    try:
        await bus.declare_queue(unique)
        channel = await connection.channel()
        # the same arguments again: an equivalent declaration
        await channel.declare_queue(f"{unique}.dead", durable=True, arguments=DEAD_QUEUE_ARGUMENTS)
        counted_only = {k: v for k, v in DEAD_QUEUE_ARGUMENTS.items() if k != "x-max-length-bytes"}
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):  # the broker's queue differs
            await channel.declare_queue(f"{unique}.dead", durable=True, arguments=counted_only)
        assert DEAD_QUEUE_ARGUMENTS["x-max-length-bytes"] == DEAD_QUEUE_MAX_BYTES
    finally:
        await connection.close()
        await bus.close()


async def test_a_dead_letter_queue_declared_with_older_bounds_is_kept_and_the_queue_works(
        rabbit_url: str, unique: str, caplog: pytest.LogCaptureFixture) -> None:
    connection = await aio_pika.connect(rabbit_url)
    bus = RabbitBus(rabbit_url)
    await bus.start()
    try:
        channel = await connection.channel()
        await channel.declare_queue(f"{unique}.dead", durable=True,
                                    arguments={"x-max-length": 10_000, "x-message-ttl": 86_400_000})
        await bus.declare_queue(unique)  # an older DermaScan declared the dead-letter queue
        assert "exists with other bounds" in caplog.text
        assert bus.connected
        await bus.publish(unique, b"still works")
        assert (await bus.queue_stats(unique)).messages == 1
        bound = await channel.declare_queue(f"{unique}.dead", passive=True)
        await bound.bind(DEAD_LETTER_EXCHANGE, routing_key=f"{unique}.dead")  # idempotent: it was bound
    finally:
        await connection.close()
        await bus.close()


async def test_a_bus_closed_during_its_first_connection_attempt_leaves_nothing_running(
        rabbit_url: str, proxy: Proxy) -> None:
    proxy.freeze()  # the broker's side never answers: the attempt is still in flight at close
    bus = RabbitBus(through(rabbit_url, proxy))
    await bus.start(wait=0.5)
    assert not bus.connected
    await bus.close()
    await asyncio.sleep(0.1)
    # aio-pika's reconnect task ignores a cancel that lands mid-attempt: left behind, it would
    # retry forever and hang the event loop's shutdown (as a gateway test's teardown once did)
    left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()
            and "connection_factory" in repr(t.get_coro())]
    assert left == []


async def test_a_reply_made_while_the_broker_is_reconnecting_reaches_its_caller_once_it_is_back(
        rabbit_url: str, proxy: Proxy, unique: str) -> None:
    """aio-pika restores a connection's channels in no set order: a worker's consumer channel may
    deliver a request before its reply channel is back. The reply waits for it, not dropped."""
    worker = await connect_bus(through(rabbit_url, proxy), publish_timeout_s=15)
    caller = await connect_bus(rabbit_url)
    delivered: asyncio.Queue[Delivery] = asyncio.Queue()
    try:
        await worker.declare_queue(unique)
        await worker.consume(unique, delivered.put, prefetch=1)
        call = asyncio.create_task(caller.call(unique, b"melanoma?", timeout=25))
        request = await asyncio.wait_for(delivered.get(), 5)
        await proxy.down()
        await until(lambda: not worker.connected, timeout=3)
        await worker.reply(request, b"nevus")  # the reply channel is down: queued, not refused
        await proxy.up()
        assert await asyncio.wait_for(call, 20) == b"nevus"
        await worker.wait_connected(timeout=10)  # and the rest of the connection follows
    finally:
        await worker.close()
        await caller.close()


async def test_a_blackholed_broker_is_not_connected_within_a_heartbeat_and_is_back_seconds_after_the_network(
        rabbit_url: str, proxy: Proxy, unique: str) -> None:
    """No byte and no close crosses the proxy: only the heartbeat can tell. The connection that
    went silent stays silent after the network returns (its bytes were lost): the bus must make a
    new one, and does within seconds, not after TCP's minutes."""
    bus = await connect_bus(through(rabbit_url, proxy), publish_timeout_s=1.0, heartbeat_s=2)
    try:
        await bus.declare_queue(unique)
        assert bus.connected
        proxy.blackhole()
        assert await until(lambda: not bus.connected, timeout=4) < 4  # a probe missed: half + one heartbeat
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await bus.publish(unique, b"upload job")
        assert time.monotonic() - started < 0.5  # refused at once, not after the publish timeout
        await asyncio.sleep(2.0)
        assert not bus.connected  # new connections go silent too while the network is out

        await proxy.up()
        back = await until(lambda: bus.connected, timeout=10)
        assert back < 10
        await assert_delivered_after_the_outage(bus, unique)
    finally:
        await bus.close()


async def test_a_publish_the_broker_does_not_confirm_in_time_makes_the_bus_not_connected_at_once(
        rabbit_url: str, proxy: Proxy, unique: str) -> None:
    bus = await connect_bus(through(rabbit_url, proxy), publish_timeout_s=1.0, heartbeat_s=30)
    try:
        await bus.declare_queue(unique)
        proxy.blackhole()
        with pytest.raises(BrokerUnavailable, match="within 1 s"):
            await bus.publish(unique, b"training job")
        assert not bus.connected  # at once, not after the 30 s heartbeat
    finally:
        await proxy.up()
        await bus.close()


async def test_a_service_that_loses_the_broker_while_joining_it_joins_again_whole(
        rabbit_url: str, proxy: Proxy, unique: str) -> None:
    """The worker's start-up once lost the broker between its consumer and its subscription and
    exited; `join` sets it all up again, and the consumer made before the loss is not restored
    beside the new one."""
    bus, direct = await connect_bus(through(rabbit_url, proxy)), await connect_bus(rabbit_url)
    got: asyncio.Queue[bytes] = asyncio.Queue()
    tries = 0

    async def handler(delivery: Delivery) -> None:
        await got.put(delivery.body)

    async def setup(made: list[Subscription]) -> None:
        nonlocal tries
        tries += 1
        await bus.declare_queue(unique)
        made.append(await bus.consume(unique, handler, prefetch=1))
        if tries == 1:  # the broker goes away now, and comes back a second later
            await proxy.down()
            asyncio.get_running_loop().call_later(1.0, lambda: asyncio.ensure_future(proxy.up()))
        made.append(await bus.subscribe(f"{unique}.models", handler))

    try:
        made = await asyncio.wait_for(join(bus, setup, retry_s=0.1), 20)
        assert tries >= 2 and len(made) == 2
        await asyncio.sleep(1.0)  # a restored consumer would be back by now
        assert (await direct.queue_stats(unique)).consumers == 1
        await direct.publish(unique, b"once")
        assert await asyncio.wait_for(got.get(), 5) == b"once"
        await asyncio.sleep(0.5)
        assert got.empty()
    finally:
        await bus.close()
        await direct.close()
