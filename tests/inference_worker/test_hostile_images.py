"""Hostile images sent straight to a worker (as a gateway would, for a header it could not read):
each gets a 4xx error with its reason, never a 500, even with every warning made an error; the
worker goes on serving."""

from __future__ import annotations

import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from inference_worker.metrics import WorkerMetrics
from inference_worker.service import InferenceWorker
from inference_worker.settings import WorkerSettings
from shared.bus import MessageBus, connect_bus
from shared.messages import PredictReply, PredictRequest, decode
from shared.store import open_store
from shared.wire import to_wire
from tests.conftest import FIXTURES

pytestmark = pytest.mark.timeout(90)
HOSTILE = FIXTURES / "hostile"


@pytest.fixture
async def worker_bus(tmp_path: Path, tiny_model_dir: Path) -> AsyncIterator[MessageBus]:
    settings = WorkerSettings(store_url=tmp_path.as_uri(), model_path=tiny_model_dir / "model.keras",
                              metrics_port=0)
    bus = await connect_bus("memory://")
    store = await open_store(settings.store_url)
    worker = InferenceWorker(settings, bus, store, WorkerMetrics(CollectorRegistry()))
    await worker.start()
    yield bus
    await worker.stop()
    await bus.close()


async def ask(bus: MessageBus, image: bytes, image_format: str) -> PredictReply:
    wire = to_wire(PredictRequest(image=image, image_format=image_format, deadline=time.time() + 20))
    body = await bus.call("dermascan.predict", wire.body, headers=wire.headers, timeout=20)
    return decode(PredictReply, body)


@pytest.mark.parametrize("name,image_format,status,code", [
    ("bomb-50mp.png", "png", 413, "too_many_pixels"),
    ("bomb-100mp.png", "png", 413, "too_many_pixels"),  # once an uncaught DecompressionBombWarning: 500
    ("bomb-10gp.png", "png", 413, "too_many_pixels"),
    ("truncated.jpg", "jpeg", 400, "corrupt_image"),
    ("not-an-image.jpg", "jpeg", 400, "not_an_image"),
    ("animation.gif", "jpeg", 415, "unsupported_format"),
])
async def test_a_hostile_image_is_a_4xx_with_its_reason(worker_bus: MessageBus, melanoma_jpeg: bytes,
                                                        name: str,
                                                        image_format: str, status: int, code: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reply = await ask(worker_bus, (HOSTILE / name).read_bytes(), image_format)
    assert reply.result is None and reply.error is not None
    assert (reply.error.status, reply.error.code) == (status, code), reply.error.message
    assert (await ask(worker_bus, melanoma_jpeg, "jpeg")).result is not None  # still serving
