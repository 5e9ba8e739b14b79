"""The RabbitMQ `MessageBus` (aio-pika): robust connection, publisher confirms, durable queues
with a dead-letter exchange, and one reply queue per process for RPC.

A broker can go silent without closing anything (a dropped route, a restarted NAT, a host that
froze): TCP then says nothing for minutes. So the connection carries a short AMQP heartbeat (the
broker drops a client it has not heard from, and requeues what that client held), and the bus
probes the broker itself every half heartbeat: a broker that has not answered within a heartbeat,
or a publish it did not confirm in time, makes the bus not `connected` at once; without an answer
the connection is dropped and a new one made, every second until the broker answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from shared.bus.acks import Acks
from shared.bus.base import BrokerUnavailable, Delivery, Handler, QueueFull, QueueStats, Unroutable
from shared.bus.rpc import PendingReplies
from shared.bus.topology import DEAD_LETTER_EXCHANGE, DEAD_QUEUE_ARGUMENTS, QueueSpec, dead_letter_queue
from shared.wire import new_id

log = logging.getLogger(__name__)
T = TypeVar("T")

_RECONNECT_DELAY_S = 1.0  # between connection attempts, the first and after a loss (aio-pika's: 5 s)
_CONNECT_TIMEOUT_S = 5.0  # at most, for one attempt: TCP, then the AMQP handshake
_CLOSE_STEP_S = 1.0  # the longest close() waits on one step of closing (a broker answers in ms)
#: What aiormq raises for a connection (or its channel) lost under a call.
_LOST = (aiormq.exceptions.AMQPConnectionError, aiormq.exceptions.ChannelInvalidStateError,
         ConnectionError)


def _delivery(message: AbstractIncomingMessage) -> Delivery:
    return Delivery(
        body=message.body,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        headers=dict(message.headers or {}),
        redelivered=bool(message.redelivered),
    )


_BATCH_HEADER = "x-dermascan-replies"  # [[correlation id, body length], ...] of a batched reply


def _reply_message(replies: list[tuple[str, bytes]]) -> aio_pika.Message:
    """One reply as itself; several as one message: their bodies one after the other, and the
    correlation id and length of each in a header."""
    if len(replies) == 1:
        correlation_id, body = replies[0]
        return aio_pika.Message(body, correlation_id=correlation_id)
    return aio_pika.Message(b"".join(body for _, body in replies),
                            headers={_BATCH_HEADER: [[cid, len(body)] for cid, body in replies]})


def _split_replies(message: AbstractIncomingMessage) -> list[tuple[str | None, bytes]]:
    index = (message.headers or {}).get(_BATCH_HEADER)
    if not isinstance(index, list):
        return [(message.correlation_id, message.body)]
    replies: list[tuple[str | None, bytes]] = []
    start = 0
    for entry in index:  # [correlation id, body length], as _reply_message writes them
        if not isinstance(entry, list) or len(entry) != 2:
            raise ValueError(f"malformed {_BATCH_HEADER} entry: {entry!r}")
        correlation_id, length = entry
        end = start + int(str(length))
        replies.append((str(correlation_id), message.body[start:end]))
        start = end
    return replies


class _Consumer:
    """A consumer on its own channel; `cancel` stops deliveries, waits for running handlers,
    sends their acks, then closes the channel. Each step that waits on the broker gives up after
    `step_timeout_s`, and is skipped while `linked()` is false (the connection is lost): a broker
    that is gone or silent answers none of them (and redelivers to another consumer what was not
    acked), and a worker told to stop must not wait on it. The close is started even then, so
    that the channel is not restored with the connection, but not waited for."""

    def __init__(self, channel: AbstractChannel, acks: Acks | None = None, *,
                 step_timeout_s: float = 5.0, linked: Callable[[], bool] = lambda: True) -> None:
        self._channel = channel
        self._linked = linked
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._running: set[asyncio.Task[object]] = set()
        self._step_timeout_s = step_timeout_s
        self._abandoned: set[asyncio.Future[Any]] = set()
        self.acks = acks

    def track(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def cancel(self) -> None:
        if self._queue is not None and self._tag is not None:
            queue, tag = self._queue, self._tag
            await self._step(lambda: queue.cancel(tag))
        if self._running:
            await asyncio.wait(set(self._running), timeout=30)
        if self.acks is not None:
            await self._step(self.acks.drain)
        if self._linked():
            await self._step(self._channel.close)
        else:
            self._close_unlinked()

    def _close_unlinked(self) -> None:
        """Close the channel without waiting for a broker that is gone: a robust channel marks
        itself closed as its close starts, so the restored connection does not bring it (and its
        consumer) back."""
        _hold(asyncio.ensure_future(self._channel.close()), self._abandoned)

    async def _step(self, step: Callable[[], Awaitable[object]]) -> None:
        """`step()`, given up after the step timeout, and not started at all while the connection
        is lost (it would wait for aio-pika to restore the channel); its failure is no news."""
        if not self._linked():
            return
        task = asyncio.ensure_future(step())
        done, _ = await asyncio.wait({task}, timeout=self._step_timeout_s)
        if done:
            if not task.cancelled():
                task.exception()  # retrieved: a channel that is gone fails its steps
        else:
            _abandon(task, self._abandoned)


class RabbitBus:
    """A `MessageBus` over RabbitMQ. Loop-only. Call `start()` once, `close()` once."""

    def __init__(self, url: str, *, publish_timeout_s: float = 5.0, heartbeat_s: int = 5) -> None:
        self._url = url
        self._publish_timeout_s = publish_timeout_s
        self._heartbeat_s = heartbeat_s
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._reply_channel: AbstractChannel | None = None
        self._dead_letter: AbstractExchange | None = None
        self._replies = PendingReplies(f"dermascan.reply.{new_id()}")
        self._outbox: dict[str, list[tuple[str, bytes]]] = {}  # reply queue -> replies of this turn
        self._sending: set[asyncio.Task[None]] = set()
        self._ready = asyncio.Event()
        self._reply_path = asyncio.Event()  # set while the reply channel and its consumer are restored
        self._connector: asyncio.Task[None] | None = None
        self._silent = False  # the broker missed a probe or a confirm, and has not answered since
        self._probe_now = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None
        self._abandoned: set[asyncio.Future[Any]] = set()  # cancelled, still ending: see _abandon

    async def start(self, *, wait: float = 5.0) -> None:
        """Connect in the background; waits up to `wait` s for the first connection."""
        self._connector = asyncio.create_task(self._connect_forever())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._ready.wait(), wait)

    async def _connect_forever(self) -> None:
        while True:
            try:
                connection = await self._connect_once()
                break
            except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
                log.warning("broker not reachable (%s); retrying", exc)
                await asyncio.sleep(_RECONNECT_DELAY_S)
        self._connection = connection
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        self._channel = channel
        self._dead_letter = await channel.declare_exchange(
            DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
        )
        reply_channel = await connection.channel(publisher_confirms=False)
        self._reply_channel = reply_channel
        replies = await reply_channel.declare_queue(
            self._replies.reply_to, exclusive=True, auto_delete=True
        )
        await replies.consume(self._on_reply, no_ack=True)
        # aio-pika restores a connection's channels one by one, in no set order: a consumer's channel
        # may deliver before the reply channel is back. The reply path is ours to track.
        reply_channel.reopen_callbacks.add(self._reply_path_restored)
        connection.close_callbacks.add(self._lost)
        connection.reconnect_callbacks.add(self._reconnected)
        self._reply_path.set()
        self._ready.set()
        self._watchdog = asyncio.create_task(self._watch(), name="broker-watchdog")
        self._watchdog.add_done_callback(_report_death)

    def _reply_path_restored(self, *_: object) -> None:
        """The reply channel is reopened, our reply queue declared again and consumed."""
        self._reply_path.set()

    def _lost(self, *_: object) -> None:
        self._reply_path.clear()
        self._fail_pending()

    def _reconnected(self, *_: object) -> None:
        """A new connection is made and its channels restored: the broker answered it."""
        self._silent = False

    async def _watch(self) -> None:
        """Probe the broker every half heartbeat, and at once after a publish it did not
        confirm in time; mark the bus silent while it does not answer, and drop a connection that
        has not answered within a heartbeat (aio-pika then makes a new one)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._probe_now.wait(), self._heartbeat_s / 2)
            self._probe_now.clear()
            if not self._linked():
                continue  # lost and being reconnected: nothing to probe
            if await self._answers():
                self._silent = False
                continue
            self._silent = True
            self._drop_connection()

    async def _answers(self) -> bool:
        """Whether the broker answers a round trip within a heartbeat: Basic.Qos on the reply
        channel, which changes nothing there (its consumer takes no acks)."""
        channel = self._reply_channel
        if channel is None:
            return False
        probe = asyncio.ensure_future(channel.set_qos(prefetch_count=0))
        done, _ = await asyncio.wait({probe}, timeout=self._heartbeat_s)
        if not done:
            # not awaited: a cancelled RPC makes aiormq close its channel, which waits on the broker
            _abandon(probe, self._abandoned)
            return False
        return not probe.cancelled() and probe.exception() is None

    def _drop_connection(self) -> None:
        """End the silent connection (aio-pika's robust connection then connects afresh)."""
        if self._sever():
            log.warning("the broker has not answered for %d s (heartbeat); dropped the connection, "
                        "making a new one", self._heartbeat_s)
            self._fail_pending()

    def _sever(self) -> bool:
        """End the connection now, without the close handshake (which waits for the broker's
        Close-Ok: a silent broker never sends it), as aiormq ends one it finds stuck: by cancelling
        its reader, which closes the socket and fails every call still waiting on the connection.
        False when there is no open connection to end."""
        connection = self._connection
        transport = connection.transport if connection is not None else None
        if transport is None or transport.connection.is_closed:
            return False
        reader = getattr(transport.connection, "_reader_task", None)  # aiormq's; set once connected
        if reader is None or reader.done():
            return False
        reader.cancel()
        return True

    def _suspect(self) -> None:
        """A step got no answer within the publish timeout: not `connected` until a probe is
        answered (at once, if the broker is merely slow to confirm)."""
        self._silent = True
        self._probe_now.set()

    async def _connect_once(self) -> aio_pika.RobustConnection:
        """One connection attempt (aio-pika's `connect_robust`, holding on to the connection):
        a failed or cancelled attempt closes it, because aio-pika's reconnect task ignores a
        cancel that lands mid-attempt and would otherwise retry forever behind a closed bus."""
        url = aio_pika.connection.make_url(self._url)
        # The URL's own settings win; the heartbeat setting and our reconnect pace fill the rest.
        url = url.update_query({"heartbeat": str(self._heartbeat_s),
                                "reconnect_interval": str(_RECONNECT_DELAY_S), **url.query})
        connection = aio_pika.RobustConnection(url)
        try:
            # aio-pika's later attempts take this timeout too: a handshake silent for a heartbeat
            # is as lost as a connection, and an attempt begun in a black hole must not outlast
            # the network's return by more than that
            await connection.connect(timeout=min(_CONNECT_TIMEOUT_S, self._heartbeat_s))
        except BaseException:
            await asyncio.shield(connection.close())
            raise
        return connection

    @property
    def connected(self) -> bool:
        """True while the connection is up, the publishing channel open, the reply queue
        consumed and the broker answering: false from the moment the broker is lost, or has not
        answered a probe within a heartbeat or a publish within the publish timeout, until the
        robust connection has reconnected and restored both channels (aio-pika's own `is_closed`
        stays false while it reconnects) and the broker answers. A call made once this is true has
        a reply queue for its answer."""
        return self._linked() and not self._silent

    def _linked(self) -> bool:
        """`connected` as this process sees it, whether or not the broker still answers."""
        connection, channel = self._connection, self._channel
        if not (self._ready.is_set() and self._reply_path.is_set()):
            return False
        if connection is None or connection.is_closed:
            return False
        transport = connection.transport
        if transport is None or transport.connection.is_closed or not connection.connected.is_set():
            return False
        return channel is not None and not channel.is_closed

    async def _bounded(self, step: Awaitable[T], what: str) -> T:
        """`step`, or BrokerUnavailable when the broker has not answered within the publish
        timeout (a broker that is unreachable without closing the connection). Runs in the caller's
        task (`asyncio.timeout`, not `wait_for`'s task of its own, which started the step a turn of the
        loop later: a publish left one turn after the request was in)."""
        try:
            async with asyncio.timeout(self._publish_timeout_s):
                return await step
        except TimeoutError:
            self._suspect()
            raise BrokerUnavailable(
                f"{what}: no answer from the broker within {self._publish_timeout_s:g} s") from None
        except _LOST as exc:
            raise BrokerUnavailable(f"{what}: the connection to the broker was lost ({exc})") from exc
        except asyncio.CancelledError:
            # aiormq cancels the RPCs of a connection it closes: a cancel that was not meant for
            # this task is the broker lost, not a reason to end a caller's loop (a heartbeat's)
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise
            raise BrokerUnavailable(f"{what}: the connection to the broker was lost") from None

    def _live_channel(self, replies: bool = False) -> AbstractChannel:
        """The publishing channel (with confirms), or with `replies` the reply channel (without),
        each usable once restored, whatever the state of the other."""
        channel = self._reply_channel if replies else self._channel
        usable = self._reply_path.is_set() if replies else self.connected
        if not usable or channel is None or channel.is_closed:
            raise BrokerUnavailable("the message broker is not reachable")
        return channel

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Return once `connected`; raises BrokerUnavailable after `timeout` s (None: wait on)."""
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
                # aio-pika's robust connection sets no event once it has reopened our channel
                while not self.connected:  # noqa: ASYNC110 - the one poll, for every service
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise BrokerUnavailable(f"the message broker is not reachable after {timeout:g} s") from None

    async def declare_queue(self, name: str, *, max_length: int | None = None) -> None:
        channel = self._live_channel()
        dead = dead_letter_queue(name)
        await self._bounded(self._declare_dead(dead), f"declaring {dead}")
        arguments = QueueSpec(name, max_length).arguments()
        await self._bounded(channel.declare_queue(name, durable=True, arguments=arguments),
                            f"declaring {name}")

    async def _declare_dead(self, name: str) -> None:
        """Declare and bind a dead-letter queue on a channel of its own: one declared earlier with
        other bounds is kept as it is (RabbitMQ refuses to change a queue's arguments, and the
        refusal closes the channel it came on), with a warning saying how to apply the new ones."""
        assert self._connection is not None
        channel = await self._connection.channel()
        try:
            try:
                dead = await channel.declare_queue(name, durable=True, arguments=DEAD_QUEUE_ARGUMENTS)
            except aiormq.exceptions.ChannelPreconditionFailed:
                log.warning("dead-letter queue %s exists with other bounds; kept as it is (delete it, or "
                            "set a policy, to bound it by %s)", name, DEAD_QUEUE_ARGUMENTS)
                with contextlib.suppress(Exception):
                    await channel.close()
                channel = await self._connection.channel()
                dead = await channel.declare_queue(name, passive=True)
            await dead.bind(DEAD_LETTER_EXCHANGE, routing_key=name)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def publish(
        self,
        queue: str,
        body: bytes,
        *,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expiration: float | None = None,
        headers: Mapping[str, object] | None = None,
        persistent: bool = True,
    ) -> None:
        channel = self._live_channel()
        message = aio_pika.Message(
            body,
            correlation_id=correlation_id,
            reply_to=reply_to,
            expiration=expiration,
            headers=dict(headers) if headers else None,  # type: ignore[arg-type]  # FieldTable: its own union
            delivery_mode=(
                aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT
            ),
        )
        try:
            await self._bounded(channel.default_exchange.publish(message, routing_key=queue, mandatory=True),
                                f"publish to {queue!r}")
        except aiormq.exceptions.PublishError as exc:
            raise Unroutable(f"no queue named {queue!r}") from exc
        except aiormq.exceptions.DeliveryError as exc:
            raise QueueFull(f"queue {queue!r} refused the message (full)") from exc
        except (aiormq.exceptions.AMQPConnectionError, aiormq.exceptions.ChannelInvalidStateError,
                ConnectionError, RuntimeError) as exc:
            raise BrokerUnavailable(f"publish failed: {exc}") from exc

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> _Consumer:
        what = f"consuming {queue!r}"
        async with self._channel_for(what) as channel:
            await self._bounded(channel.set_qos(prefetch_count=prefetch), what)
            source = await self._bounded(channel.get_queue(queue, ensure=True), what)
            acks = Acks(before=self._replies_sent)
            consumer = _Consumer(channel, acks, step_timeout_s=self._publish_timeout_s, linked=self._linked)

            async def on_message(message: AbstractIncomingMessage) -> None:
                consumer.track()
                acks.delivered(message)
                try:
                    await handler(_delivery(message))
                except Exception:
                    log.exception("handler failed on %s; message dead-lettered", queue)
                    await acks.rejected(message)
                else:
                    acks.handled(message)

            consumer._queue, consumer._tag = source, await self._bounded(source.consume(on_message), what)
            return consumer

    @contextlib.asynccontextmanager
    async def _channel_for(self, what: str) -> AsyncIterator[AbstractChannel]:
        """A channel of its own for a consumer; closed again (best effort, bounded) when setting
        the consumer up fails, so that a restored connection does not bring back half of it."""
        self._live_channel()
        assert self._connection is not None
        channel = await self._bounded(self._connection.channel(), what)
        try:
            yield channel
        except BaseException:
            await _Consumer(channel, step_timeout_s=_CLOSE_STEP_S, linked=self._linked).cancel()
            raise

    async def call(
        self, queue: str, body: bytes, *, timeout: float, headers: Mapping[str, object] | None = None
    ) -> bytes:
        async def publish(correlation_id: str) -> None:
            await self.publish(queue, body, correlation_id=correlation_id, reply_to=self._replies.reply_to,
                               expiration=timeout, headers=headers, persistent=False)

        return await self._replies.call(publish, queue=queue, timeout=timeout)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        for correlation_id, body in _split_replies(message):
            self._replies.resolve(correlation_id, body)

    def _fail_pending(self, *_: object) -> None:
        self._replies.fail_all(BrokerUnavailable("connection to the broker was lost"))

    async def reply(self, request: Delivery, body: bytes) -> None:
        """Queue a reply; the replies of one turn of the event loop leave together, one message
        per reply queue. No publisher confirm: a reply queue is its caller's own, and when it is
        gone nobody waits any more (the caller's deadline covers a lost reply). While the broker
        is being reconnected the replies wait for the reply channel, up to the publish timeout:
        a request delivered on a consumer channel restored first is answered, not dropped."""
        if not request.reply_to:
            return
        if self._reply_channel is None:
            raise BrokerUnavailable("the message broker is not reachable")
        if not self._outbox:
            task = asyncio.get_running_loop().create_task(self._send_replies())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        self._outbox.setdefault(request.reply_to, []).append((request.correlation_id or "", body))

    async def _replies_sent(self) -> None:
        """Wait until the replies queued so far are handed to the connection."""
        if self._sending:
            await asyncio.wait(set(self._sending))

    async def _send_replies(self) -> None:
        if not self._reply_path.is_set():  # reconnecting: replies queued meanwhile join this outbox
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reply_path.wait(), self._publish_timeout_s)
        outbox, self._outbox = self._outbox, {}
        for reply_to, replies in outbox.items():
            try:
                channel = self._live_channel(replies=True)
                # not mandatory: a caller that is gone wants no answer, and a returned one is noise
                await channel.default_exchange.publish(_reply_message(replies), routing_key=reply_to,
                                                       mandatory=False)
            except (BrokerUnavailable, aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
                log.warning("%d replies to %s lost: %s", len(replies), reply_to, exc)

    async def _fanout(self, channel: AbstractChannel, exchange: str) -> AbstractExchange:
        return await channel.declare_exchange(exchange, aio_pika.ExchangeType.FANOUT, durable=True)

    async def broadcast(self, exchange: str, body: bytes) -> None:
        channel = self._live_channel()

        async def send() -> None:
            target = await self._fanout(channel, exchange)
            await target.publish(aio_pika.Message(body), routing_key="", mandatory=False)

        try:
            await self._bounded(send(), f"broadcast on {exchange!r}")
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise BrokerUnavailable(f"broadcast failed: {exc}") from exc

    async def subscribe(self, exchange: str, handler: Handler) -> _Consumer:
        what = f"subscribing to {exchange!r}"
        async with self._channel_for(what) as channel:
            source = await self._bounded(self._fanout(channel, exchange), what)
            queue = await self._bounded(channel.declare_queue(exclusive=True, auto_delete=True), what)
            await self._bounded(queue.bind(source), what)

            async def on_message(message: AbstractIncomingMessage) -> None:
                try:
                    await handler(_delivery(message))
                except Exception:
                    log.exception("broadcast handler failed on %s", exchange)

            consumer = _Consumer(channel, step_timeout_s=self._publish_timeout_s, linked=self._linked)
            tag = await self._bounded(queue.consume(on_message, no_ack=True), what)
            consumer._queue, consumer._tag = queue, tag
            return consumer

    async def queue_stats(self, queue: str) -> QueueStats:
        self._live_channel()
        assert self._connection is not None
        connection = self._connection

        async def declare() -> AbstractQueue:
            # A passive declare that fails closes its channel, so use a throwaway one.
            channel = await connection.channel()
            try:
                return await channel.declare_queue(queue, passive=True)
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()

        try:
            declared = await self._bounded(declare(), f"stats of {queue!r}")
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            raise Unroutable(f"no queue named {queue!r}") from exc
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise BrokerUnavailable(f"stats of {queue!r} failed: {exc}") from exc
        result = declared.declaration_result
        return QueueStats(messages=result.message_count or 0, consumers=result.consumer_count or 0)

    async def close(self) -> None:
        """Close the connection, within a few seconds whatever the broker does: each step that
        waits on it (aio-pika's close handshake waits for the broker's Close-Ok, which a silent
        broker never sends) is given up after `_CLOSE_STEP_S`."""
        for task in (self._connector, self._watchdog):
            if task is not None:
                await _cancel_within(task, _CLOSE_STEP_S, self._abandoned)
        self._fail_pending()
        if self._connection is None:
            return
        if self._silent:
            self._sever()  # no handshake with a broker that does not answer
        closing = asyncio.ensure_future(self._connection.close())
        done, _ = await asyncio.wait({closing}, timeout=_CLOSE_STEP_S)
        if not done:
            log.warning("the broker did not answer the connection's close within %g s; ended without it",
                        _CLOSE_STEP_S)
            self._sever()  # ends the close too, and every call left waiting on the connection
            done, _ = await asyncio.wait({closing}, timeout=_CLOSE_STEP_S)
        if not done:
            _abandon(closing, self._abandoned)
        # what was abandoned on the way (a cancelled call's channel close) ends with the connection
        if self._abandoned:
            await asyncio.wait(set(self._abandoned), timeout=_CLOSE_STEP_S)


def _report_death(task: asyncio.Task[None]) -> None:
    """Done-callback of the watchdog, which runs until the bus closes: say why it stopped."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped: %r; a silent broker is now noticed only by aiormq's own heartbeat",
                  task.get_name(), task.exception())


async def _cancel_within(task: asyncio.Future[Any], timeout: float, keep: set[asyncio.Future[Any]]) -> None:
    """Cancel `task` and wait up to `timeout` s for it to end; see `_abandon`."""
    task.cancel()
    await asyncio.wait({task}, timeout=timeout)
    _abandon(task, keep)


def _abandon(task: asyncio.Future[Any], keep: set[asyncio.Future[Any]]) -> None:
    """Cancel `task` without waiting for it. aio-pika and aiormq may await the broker while they
    handle a cancel (a cancelled RPC closes its channel): a task still running is left to end by
    itself (`_hold`)."""
    task.cancel()
    _hold(task, keep)


def _hold(task: asyncio.Future[Any], keep: set[asyncio.Future[Any]]) -> None:
    """Let `task` end by itself, held in `keep` until it does (a task nothing refers to may be
    collected mid-way); how it ends is no news (its failure is retrieved, not logged)."""
    def done(task: asyncio.Future[Any]) -> None:
        keep.discard(task)
        if not task.cancelled():
            task.exception()

    if task.done():
        done(task)
    else:
        keep.add(task)
        task.add_done_callback(done)
