"""The `MessageBus` protocol every service talks to, and the errors it raises.

Semantics shared by every implementation (and pinned by tests/shared/test_bus_contract.py):
- A message is a body and headers: both reach the consumer unchanged (header values str, int,
  bool or None; an AMQP float keeps 32 bits, so send a float as a string).
- Queues are declared before use; publishing to an undeclared queue raises `Unroutable`.
- A queue declared with `max_length` refuses publishes past it with `QueueFull` (never drops).
- A message published with `expiration` that nobody consumed in time is discarded.
- `consume` runs up to `prefetch` handlers concurrently. A handler that returns acks the
  message; one that raises rejects it to the queue's dead-letter queue (`<queue>.dead`).
- `call` is an RPC: it publishes with a correlation id and a reply address and returns the
  reply body, or raises `DeadlineExceeded`. Consumers answer with `reply`.
- `broadcast`/`subscribe` is fanout: every subscriber gets every message sent after it joined.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from shared.errors import Overloaded, ServiceUnavailable


class BrokerUnavailable(ServiceUnavailable):
    default_code = "broker_unavailable"


class Unroutable(ServiceUnavailable):
    default_code = "no_route"


class QueueFull(Overloaded):
    default_code = "queue_full"


@dataclass(frozen=True)
class Delivery:
    """One message as a consumer sees it."""

    body: bytes
    correlation_id: str | None = None
    reply_to: str | None = None
    headers: dict[str, object] = field(default_factory=dict)
    redelivered: bool = False


@dataclass(frozen=True)
class QueueStats:
    messages: int
    consumers: int


Handler = Callable[[Delivery], Awaitable[None]]


class Subscription(Protocol):
    async def cancel(self) -> None:
        """Stop delivering; handlers already running finish."""


class MessageBus(Protocol):
    """A message broker connection. All methods are loop-only coroutines."""

    async def declare_queue(self, name: str, *, max_length: int | None = None) -> None:
        """Create a durable queue with its dead-letter queue (idempotent)."""

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
        """Publish (to disk unless `persistent` is False); returns once the broker has taken it.
        Raises BrokerUnavailable, Unroutable or QueueFull."""

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> Subscription: ...

    async def call(
        self, queue: str, body: bytes, *, timeout: float, headers: Mapping[str, object] | None = None
    ) -> bytes:
        """RPC: publish to `queue` and wait up to `timeout` s for the reply body."""

    async def reply(self, request: Delivery, body: bytes) -> None:
        """Answer an RPC request (no-op when the request has no reply address)."""

    async def broadcast(self, exchange: str, body: bytes) -> None: ...

    async def subscribe(self, exchange: str, handler: Handler) -> Subscription: ...

    async def queue_stats(self, queue: str) -> QueueStats:
        """Messages ready and consumers attached; raises Unroutable for an unknown queue."""

    @property
    def connected(self) -> bool: ...

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Return once `connected` (at once when it is); raises BrokerUnavailable when `timeout`
        s pass first (None: wait as long as it takes)."""

    async def close(self) -> None: ...
