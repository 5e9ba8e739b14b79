"""A rolling deploy on both buses: consumers of today read what tomorrow's producers send (one more
field, one more header), and refuse a newer major version to the dead-letter queue, not by dying."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import Field

from shared.bus import Delivery, MessageBus
from shared.bus.topology import dead_letter_queue
from shared.messages import PredictRequest, TrainOptions, TrainRequest
from shared.wire import from_wire, to_wire

pytestmark = pytest.mark.timeout(30)


class NextTrainOptions(TrainOptions):
    warmup_epochs: int = Field(2, description="A later trainer's option.")


class NextTrainRequest(TrainRequest):
    """A later gateway's training job: a new field, and a new option inside."""

    priority: str = Field("normal", description="A later field.")
    options: NextTrainOptions = Field(default_factory=NextTrainOptions, description="Run options.")


class FutureTrainRequest(TrainRequest):
    schema_version: int = Field(2, description="A change version 1 readers cannot follow.")


class NextPredictRequest(PredictRequest):
    model_version: str | None = Field(None, description="The version asked for.")


async def test_a_consumer_of_today_reads_tomorrows_jobs_and_dead_letters_the_next_major(
    bus: MessageBus, unique: str
) -> None:
    await bus.declare_queue(unique)
    read: asyncio.Queue[TrainRequest] = asyncio.Queue()

    async def consumer(delivery: Delivery) -> None:  # as the trainer reads its queue
        await read.put(from_wire(TrainRequest, delivery.body, delivery.headers))

    await bus.consume(unique, consumer, prefetch=1)
    for message in (FutureTrainRequest(job_id="from-v2"),
                    NextTrainRequest(job_id="from-v1.1", priority="high")):
        wire = to_wire(message)
        await bus.publish(unique, wire.body, headers={**wire.headers, "x-trace-id": "t1"})
    job = await asyncio.wait_for(read.get(), 5)
    assert type(job) is TrainRequest and job.job_id == "from-v1.1" and job.options.epochs == 30
    dead = dead_letter_queue(unique)
    deadline = time.monotonic() + 5
    while (await bus.queue_stats(dead)).messages < 1:
        assert time.monotonic() < deadline, "the version 2 job was not dead-lettered"
        await asyncio.sleep(0.05)


async def test_a_predict_consumer_of_today_answers_tomorrows_gateway(bus: MessageBus, unique: str) -> None:
    await bus.declare_queue(unique)

    async def worker(delivery: Delivery) -> None:
        request = from_wire(PredictRequest, delivery.body, delivery.headers)
        await bus.reply(delivery, f"{request.image_format}:{len(request.image)}".encode())

    await bus.consume(unique, worker, prefetch=1)
    wire = to_wire(NextPredictRequest(image=b"\x89PNG" + bytes(1000), image_format="png",
                                      deadline=time.time() + 5, model_version="v9"))
    assert wire.headers["model_version"] == "v9"
    assert await bus.call(unique, wire.body, timeout=5, headers=wire.headers) == b"png:1004"
