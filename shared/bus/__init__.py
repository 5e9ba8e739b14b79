"""Message buses: RabbitMQ for the distributed mode, in-memory for the embedded one."""

from __future__ import annotations

from shared.bus.base import (
    BrokerUnavailable,
    Delivery,
    Handler,
    MessageBus,
    QueueFull,
    QueueStats,
    Subscription,
    Unroutable,
)


async def connect_bus(url: str, *, publish_timeout_s: float = 5.0, heartbeat_s: int = 5) -> MessageBus:
    """Open the bus named by `url`: `memory://` or `amqp://user:pass@host:port/vhost`.

    A RabbitMQ bus keeps reconnecting in the background; it does not fail when the broker
    is down at start, its operations raise BrokerUnavailable until it is back (and so does a
    publish the broker has not confirmed within `publish_timeout_s`). `heartbeat_s` is the AMQP
    heartbeat: a broker silent that long is counted lost and a new connection made.
    """
    if url.startswith("memory://"):
        from shared.bus.memory import MemoryBus

        return MemoryBus()
    if url.startswith(("amqp://", "amqps://")):
        from shared.bus.rabbitmq import RabbitBus

        bus = RabbitBus(url, publish_timeout_s=publish_timeout_s, heartbeat_s=heartbeat_s)
        await bus.start()
        return bus
    raise ValueError(f"unsupported broker URL {url!r}: use memory:// or amqp://")


__all__ = [
    "BrokerUnavailable",
    "Delivery",
    "Handler",
    "MessageBus",
    "QueueFull",
    "QueueStats",
    "Subscription",
    "Unroutable",
    "connect_bus",
]
