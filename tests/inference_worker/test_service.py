"""The worker as the gateway sees it over the bus: replies per request, bad images and expired
requests handled one by one, never at the expense of the others; and the model it serves
follows the registry's pointer, whatever the broadcasts say."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from inference_worker.metrics import WorkerMetrics
from inference_worker.service import InferenceWorker
from inference_worker.settings import WorkerSettings
from shared.bus import MessageBus, connect_bus
from shared.errors import DeadlineExceeded
from shared.manifest import ModelManifest
from shared.messages import ModelPromoted, PredictReply, PredictRequest, decode, encode
from shared.registry import ModelRegistry
from shared.store import open_store
from shared.wire import to_wire

pytestmark = pytest.mark.timeout(60)
QUEUE = "dermascan.predict"


@pytest.fixture
async def served(tmp_path: Path, tiny_model_dir: Path) -> AsyncIterator[tuple[MessageBus, CollectorRegistry]]:
    """A worker on the in-memory bus serving the tiny model; yields the bus and its metrics."""
    settings = WorkerSettings(store_url=tmp_path.as_uri(), model_path=tiny_model_dir / "model.keras",
                              metrics_port=0, max_batch_size=8, max_wait_ms=20)
    bus = await connect_bus("memory://")
    store = await open_store(settings.store_url)
    registry = CollectorRegistry()
    worker = InferenceWorker(settings, bus, store, WorkerMetrics(registry))
    await worker.start()
    yield bus, registry
    await worker.stop()
    await bus.close()
    await store.close()


async def ask(bus: MessageBus, image: bytes, *, deadline_in: float = 10.0, timeout: float = 10.0,
              image_format: str = "jpeg") -> PredictReply:
    wire = to_wire(PredictRequest(image=image, image_format=image_format, deadline=time.time() + deadline_in))
    return decode(PredictReply, await bus.call(QUEUE, wire.body, headers=wire.headers, timeout=timeout))


def model_calls(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("dermascan_inference_worker_batch_size_count") or 0.0


async def test_concurrent_requests_each_get_their_own_reply_from_a_shared_batch(
    served: tuple[MessageBus, CollectorRegistry], fixture_images: dict[str, list[Path]]
) -> None:
    bus, registry = served
    images = [path.read_bytes() for paths in fixture_images.values() for path in paths][:16]
    alone = [await ask(bus, image) for image in images[:4]]
    together = await asyncio.gather(*(ask(bus, image) for image in images))
    for single, batched in zip(alone, together, strict=False):
        assert single.result is not None and batched.result is not None
        assert batched.result.probabilities == pytest.approx(single.result.probabilities, abs=1e-5)
    assert max(reply.batch_size for reply in together) > 1
    assert model_calls(registry) < 4 + len(images)


async def test_a_bad_image_fails_only_itself(
    served: tuple[MessageBus, CollectorRegistry], melanoma_jpeg: bytes
) -> None:
    bus, _ = served
    replies = await asyncio.gather(ask(bus, melanoma_jpeg), ask(bus, melanoma_jpeg[:400]),
                                   ask(bus, melanoma_jpeg))
    good, bad, other = replies
    assert good.result is not None and other.result is not None
    assert bad.result is None and bad.error is not None and bad.error.code == "corrupt_image"
    assert bad.error.status == 400


async def test_a_lone_small_jpeg_is_decoded_on_the_loop_and_the_rest_in_the_decode_pool(
    served: tuple[MessageBus, CollectorRegistry], fixture_images: dict[str, list[Path]],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    import inference_worker.service as service
    from shared.imaging import load_for_model as load

    bus, _ = served
    decoded_on: list[str] = []

    def recorded(data: bytes, *args: Any, **kwargs: Any) -> Any:
        decoded_on.append("loop" if threading.current_thread() is threading.main_thread() else "pool")
        return load(data, *args, **kwargs)

    monkeypatch.setattr("inference_worker.service.load_for_model", recorded)  # what _decode calls
    jpegs = [path.read_bytes() for paths in fixture_images.values() for path in paths][:8]
    with Image.open(io.BytesIO(jpegs[0])) as photo:
        png = io.BytesIO()
        photo.save(png, "PNG")
        large = io.BytesIO()
        photo.resize((3000, 2250)).save(large, "JPEG", quality=98)
    assert len(large.getvalue()) > service.INLINE_DECODE_MAX_BYTES

    for image, image_format in [(jpegs[0], "jpeg"), (png.getvalue(), "png"), (large.getvalue(), "jpeg")]:
        assert (await ask(bus, image, image_format=image_format)).result is not None  # one at a time
    assert decoded_on == ["loop", "pool", "pool"]
    decoded_on.clear()
    replies = await asyncio.gather(*(ask(bus, image) for image in jpegs))  # together: the first alone
    assert all(reply.result is not None for reply in replies)
    assert decoded_on[0] == "loop" and decoded_on.count("pool") >= len(jpegs) - 2


async def test_an_expired_request_gets_no_reply_and_no_model_call(
    served: tuple[MessageBus, CollectorRegistry], melanoma_jpeg: bytes
) -> None:
    bus, registry = served
    with pytest.raises(DeadlineExceeded):
        await ask(bus, melanoma_jpeg, deadline_in=-1.0, timeout=0.5)
    assert registry.get_sample_value("dermascan_inference_worker_requests_total", {"status": "expired"}) == 1
    assert model_calls(registry) == 0
    assert (await ask(bus, melanoma_jpeg)).result is not None  # the worker is still serving
    assert model_calls(registry) == 1


async def test_the_worker_follows_the_registry_when_a_promotion_broadcast_is_missed_or_overtaken(
        tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = WorkerSettings(store_url=tmp_path.as_uri(), bundled_model_dir=tiny_model_dir,
                              model_cache_dir=tmp_path / "cache", metrics_port=0, model_reconcile_s=0.2)
    bus = await connect_bus("memory://")
    store = await open_store(settings.store_url)
    registry = ModelRegistry(store)
    worker = InferenceWorker(settings, bus, store, WorkerMetrics(CollectorRegistry()))
    await worker.start()
    try:
        assert worker.status().model_version == "tiny-v1"
        manifest = ModelManifest.model_validate_json((tiny_model_dir / "manifest.json").read_text())
        await registry.publish(tiny_model_dir / "model.keras",
                               manifest.model_copy(update={"version": "tiny-v2"}))
        await registry.promote("tiny-v2")  # and the broadcast never comes (the broker was down)
        for _ in range(100):
            if worker.status().model_version == "tiny-v2":
                break
            await asyncio.sleep(0.05)
        assert worker.status().model_version == "tiny-v2"

        # two promotions at once, their broadcasts arriving in the other order: the registry wins
        await registry.promote("tiny-v1")
        await bus.broadcast(settings.models_exchange, encode(ModelPromoted(version="tiny-v1")))
        await registry.promote("tiny-v2")
        await bus.broadcast(settings.models_exchange, encode(ModelPromoted(version="tiny-v2")))
        await bus.broadcast(settings.models_exchange, encode(ModelPromoted(version="tiny-v1")))  # late
        await asyncio.sleep(0.1)
        assert await worker.reconcile() == "tiny-v2" and worker.status().model_version == "tiny-v2"
    finally:
        await worker.stop()
        await bus.close()


async def test_a_reconcile_whose_registry_read_was_overtaken_does_not_install_the_older_version(
        tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two promotions' reconciles: the first one's read of the pointer (tiny-v1) answers only
    after the second has read tiny-v2. Serving must end on tiny-v2, what the registry says last."""
    settings = WorkerSettings(store_url=tmp_path.as_uri(), bundled_model_dir=tiny_model_dir,
                              model_cache_dir=tmp_path / "cache", metrics_port=0, model_reconcile_s=3600)
    bus = await connect_bus("memory://")
    store = await open_store(settings.store_url)
    manifest = ModelManifest.model_validate_json((tiny_model_dir / "manifest.json").read_text())
    worker = InferenceWorker(settings, bus, store, WorkerMetrics(CollectorRegistry()))
    await worker.start()
    try:
        await worker.registry.publish(tiny_model_dir / "model.keras",
                                      manifest.model_copy(update={"version": "tiny-v2"}))
        slow_read_may_answer = asyncio.Event()
        answers = iter(["stale", "tiny-v2", "tiny-v2"])

        async def current_version() -> str:
            answer = next(answers)
            if answer == "stale":  # read before the second promotion, answered after it
                await slow_read_may_answer.wait()
                return "tiny-v1"
            return answer

        monkeypatch.setattr(worker.registry, "current_version", current_version)
        first = asyncio.create_task(worker.reconcile())
        await asyncio.sleep(0.05)
        second = asyncio.create_task(worker.reconcile())
        await asyncio.sleep(0.05)
        slow_read_may_answer.set()
        await asyncio.gather(first, second)
        assert worker.status().model_version == "tiny-v2"
    finally:
        await worker.stop()
        await bus.close()
