"""The worker during a rolling deploy, on real RabbitMQ: it answers a newer gateway's requests (a
field and a header it does not know), refuses a newer major version with a reply that says why,
answers a gateway of before raw bytes, and lives on after each of them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import Field

from inference_worker.metrics import WorkerMetrics
from inference_worker.service import InferenceWorker
from inference_worker.settings import WorkerSettings
from shared.bus import MessageBus, connect_bus
from shared.messages import PredictReply, PredictRequest, decode, encode
from shared.store import open_store
from shared.wire import to_wire

pytestmark = pytest.mark.timeout(60)


class NextPredictRequest(PredictRequest):
    """A later gateway's request: one more field, same major version."""

    model_version: str | None = Field(None, description="The version asked for.")


class FuturePredictRequest(PredictRequest):
    """A gateway of the next major version."""

    schema_version: int = Field(2, description="A change version 1 readers cannot follow.")


@pytest.fixture
async def worker(rabbit_url: str, unique: str, tmp_path: Path,
                 tiny_model_dir: Path) -> AsyncIterator[tuple[MessageBus, str]]:
    """A worker of today serving the tiny model on RabbitMQ; yields a caller's bus and the queue."""
    settings = WorkerSettings(store_url=tmp_path.as_uri(), model_path=tiny_model_dir / "model.keras",
                              metrics_port=0, predict_queue=f"{unique}.predict",
                              status_exchange=f"{unique}.status", models_exchange=f"{unique}.models")
    worker_bus, caller_bus = await connect_bus(rabbit_url), await connect_bus(rabbit_url)
    store = await open_store(settings.store_url)
    served = InferenceWorker(settings, worker_bus, store, WorkerMetrics(CollectorRegistry()))
    await served.start()
    yield caller_bus, settings.predict_queue
    await served.stop()
    for bus in (caller_bus, worker_bus):
        await bus.close()
    await store.close()


async def ask(bus: MessageBus, queue: str, request: PredictRequest, **headers: object) -> PredictReply:
    wire = to_wire(request)
    body = await bus.call(queue, wire.body, timeout=20, headers={**wire.headers, **headers})
    return decode(PredictReply, body)


async def test_a_worker_answers_a_newer_gateway_and_refuses_the_next_major_version(
    worker: tuple[MessageBus, str], melanoma_jpeg: bytes
) -> None:
    bus, queue = worker
    newer = await ask(bus, queue, NextPredictRequest(image=melanoma_jpeg, image_format="jpeg",
                                                     deadline=time.time() + 20, model_version="v9"),
                      **{"x-trace-id": "abc"})
    assert newer.result is not None and newer.error is None

    future = await ask(bus, queue, FuturePredictRequest(image=melanoma_jpeg, image_format="jpeg",
                                                        deadline=time.time() + 20))
    assert future.result is None and future.error is not None
    assert (future.error.status, future.error.code) == (503, "unsupported_schema_version")
    assert "schema version 2" in future.error.message and future.error.retryable

    after = await ask(bus, queue, PredictRequest(image=melanoma_jpeg, image_format="jpeg",
                                                 deadline=time.time() + 20))
    assert after.result is not None and after.result.probabilities == newer.result.probabilities


async def test_a_malformed_request_is_answered_with_what_is_wrong(
    worker: tuple[MessageBus, str], melanoma_jpeg: bytes
) -> None:
    bus, queue = worker
    request = PredictRequest(image=melanoma_jpeg, image_format="jpeg", deadline=time.time() + 20)
    bad = await ask(bus, queue, request, deadline="soon", top_k=0)
    assert bad.error is not None and (bad.error.status, bad.error.code) == (400, "bad_message")
    assert "deadline" in bad.error.message and "top_k" in bad.error.message
    assert (await ask(bus, queue, request)).result is not None


async def test_a_gateway_of_before_raw_bytes_is_still_answered(
    worker: tuple[MessageBus, str], melanoma_jpeg: bytes
) -> None:
    bus, queue = worker
    request = PredictRequest(image=melanoma_jpeg, image_format="jpeg", deadline=time.time() + 20)
    reply = decode(PredictReply, await bus.call(queue, encode(request), timeout=20))  # base64 JSON
    assert reply.result is not None and reply.error is None
