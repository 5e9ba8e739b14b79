"""What the broker holds, declared once: every work queue with its bounds and its dead-letter
queue, and the fanout exchanges. Every service declares from this table (`declare`), and both
buses take the dead-letter bounds and queue arguments from here.

- Work queues are durable and dead-letter what a consumer rejects to `<queue>.dead` through
  `DEAD_LETTER_EXCHANGE`; a queue with `max_length` refuses publishes past it (`QueueFull`, the
  gateway's 429) instead of dropping the oldest.
- Dead-letter queues keep rejected messages for inspection, bounded in count, bytes and age (the
  oldest go first): expired predictions carry whole images, so a count alone could hold gigabytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.bus.base import MessageBus
from shared.settings import CommonSettings

if TYPE_CHECKING:  # the type of RabbitMQ arguments (pamqp comes with aio-pika); no import at run time
    from pamqp.common import FieldTable

DEAD_LETTER_EXCHANGE = "dermascan.dead-letter"
DEAD_QUEUE_MAX_MESSAGES = 10_000
DEAD_QUEUE_MAX_BYTES = 64 * 1024 * 1024
DEAD_QUEUE_TTL_MS = 86_400_000
#: RabbitMQ arguments of every dead-letter queue.
DEAD_QUEUE_ARGUMENTS: FieldTable = {
    "x-max-length": DEAD_QUEUE_MAX_MESSAGES, "x-max-length-bytes": DEAD_QUEUE_MAX_BYTES,
    "x-message-ttl": DEAD_QUEUE_TTL_MS}


def dead_letter_queue(queue: str) -> str:
    """The name of `queue`'s dead-letter queue."""
    return f"{queue}.dead"


@dataclass(frozen=True)
class QueueSpec:
    """One durable work queue: its name and, when bounded, how many messages it may hold."""

    name: str
    max_length: int | None = None

    def arguments(self) -> FieldTable:
        """The RabbitMQ arguments it is declared with."""
        arguments: FieldTable = {"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
                                        "x-dead-letter-routing-key": dead_letter_queue(self.name)}
        if self.max_length is not None:
            arguments.update({"x-max-length": self.max_length, "x-overflow": "reject-publish"})
        return arguments


@dataclass(frozen=True)
class Topology:
    """The queues and exchanges of one deployment (names and bounds come from its settings)."""

    predict: QueueSpec
    ingest: QueueSpec
    train: QueueSpec
    status_exchange: str
    models_exchange: str

    @classmethod
    def of(cls, settings: CommonSettings) -> Topology:
        """The topology `settings` name: the predict queue bounded by `max_queue_length`."""
        return cls(predict=QueueSpec(settings.predict_queue, max_length=settings.max_queue_length),
                   ingest=QueueSpec(settings.ingest_queue), train=QueueSpec(settings.train_queue),
                   status_exchange=settings.status_exchange, models_exchange=settings.models_exchange)

    @property
    def queues(self) -> tuple[QueueSpec, ...]:
        """Every work queue."""
        return self.predict, self.ingest, self.train


async def declare(bus: MessageBus, *queues: QueueSpec) -> None:
    """Declare `queues` (idempotent; each with its dead-letter queue). Raises BrokerUnavailable."""
    for queue in queues:
        await bus.declare_queue(queue.name, max_length=queue.max_length)
