"""Horizontal workers: several `python -m inference_worker` processes share one predict queue on
real RabbitMQ, and every caller gets the answer to its own image."""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest

from shared.bus import connect_bus
from shared.classifier import Classifier
from shared.imaging import load_for_model
from shared.messages import PredictReply, PredictRequest, decode
from shared.wire import to_wire
from tests.support.processes import python_module, running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
WORKERS = 3


async def test_worker_processes_share_the_queue_and_each_caller_gets_its_own_answer(
    rabbit_url: str, unique: str, tmp_path: Path, tiny_model_dir: Path, fixture_images: dict[str, list[Path]]
) -> None:
    images = [path.read_bytes() for paths in fixture_images.values() for path in paths]
    model = Classifier.load(tiny_model_dir)
    expected = model.predict(np.stack([load_for_model(image, model.input_size,
                                                      policy=model.preprocessing) for image in images]))
    queue = f"{unique}.predict"
    env = {
        "DERMASCAN_BROKER_URL": rabbit_url,
        "DERMASCAN_STORE_URL": (tmp_path / "store").as_uri(),
        "DERMASCAN_PREDICT_QUEUE": queue,
        "DERMASCAN_STATUS_EXCHANGE": f"{unique}.status",
        "DERMASCAN_MODELS_EXCHANGE": f"{unique}.models",
        "DERMASCAN_MODEL_PATH": str(tiny_model_dir / "model.keras"),
        "DERMASCAN_METRICS_PORT": "0",
        "DERMASCAN_MAX_BATCH_SIZE": "4",
        "DERMASCAN_INTRA_OP_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    bus = await connect_bus(rabbit_url)
    with ExitStack() as stack:
        workers = [stack.enter_context(running(python_module("inference_worker"),
                                               env={**env, "DERMASCAN_WORKER_ID": f"w{i}"},
                                               log=tmp_path / f"worker{i}.log")) for i in range(WORKERS)]
        await bus.declare_queue(queue, max_length=1024)
        deadline = time.monotonic() + 90
        while (await bus.queue_stats(queue)).consumers < WORKERS:
            assert all(w.poll() is None for w in workers), "a worker exited; see its log"
            assert time.monotonic() < deadline, "the workers did not start consuming"
            await asyncio.sleep(0.2)

        async def ask(index: int) -> PredictReply:
            image = images[index % len(images)]
            wire = to_wire(PredictRequest(image=image, image_format="jpeg", deadline=time.time() + 30))
            return decode(PredictReply, await bus.call(queue, wire.body, headers=wire.headers, timeout=30))

        requests = list(range(4 * len(images)))
        replies = await asyncio.gather(*(ask(i) for i in requests))
        await bus.close()

    for index, reply in zip(requests, replies, strict=True):
        assert reply.result is not None, reply.error
        got = np.array([reply.result.probabilities[name] for name in model.classes])
        closest = int(np.argmin(np.abs(expected - got).max(axis=1)))
        assert closest == index % len(images), f"request {index} got the answer of image {closest}"
        assert got == pytest.approx(expected[closest], abs=1e-5)
    served_by = {reply.worker_id for reply in replies}
    assert len(served_by) > 1, f"all {len(replies)} requests went to {served_by}"
    assert max(reply.batch_size for reply in replies) > 1
