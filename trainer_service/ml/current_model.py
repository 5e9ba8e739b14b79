"""The model a head retrain starts from, and its embeddings of the catalog's images.

`load_current` loads the served model; `ensure_embeddings` returns the embeddings of catalog
images under its backbone (cached in the store per backbone, missing ones computed on LiteRT when
it converts faithfully, see `embedder`); `Progress` is what a running job reports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np

from shared.catalog import ImageRecord
from shared.errors import Unprocessable
from shared.manifest import ModelManifest
from shared.registry import ModelRegistry
from shared.store import ObjectStore
from trainer_service.ml.dataset import ImageSet
from trainer_service.ml.embeddings import embed, load_cache, save_shard
from trainer_service.ml.evaluation import compiled_forward
from trainer_service.ml.network import embedding_model

Log = Callable[[str], None]


@dataclass
class Progress:
    """What a running job reports; read by the job heartbeat while training runs in threads.
    Every report is also where a job that should stop (cancelled, timed out, taken: `should_stop`,
    thread-safe) stops: `update` raises `Stopped`, also from a training thread's epoch callback,
    so a step already computing ends at its next report instead of running on."""

    values: dict[str, Any] = field(default_factory=dict)
    should_stop: Callable[[], bool] = lambda: False

    def update(self, **values: Any) -> None:
        """Record `values`; raises Stopped when the job should stop."""
        if self.should_stop():
            raise Stopped("the training job was stopped")
        self.values.update(values)


class Stopped(Exception):
    """A training job stopped between two progress reports (see `Progress`)."""


async def load_images(store: ObjectStore, records: list[ImageRecord], classes: list[str],
                      input_size: tuple[int, int], policy: str) -> ImageSet:
    """Decoded images of `records` as a training set (for fine-tuning)."""
    from shared.imaging import load_for_model

    async def pixels(record: ImageRecord) -> np.ndarray:
        return await asyncio.to_thread(load_for_model, await store.get(record.key), input_size, policy=policy)

    images = [await pixels(r) for r in records]
    return ImageSet(np.stack(images), np.array([classes.index(r.label) for r in records], np.int32),
                    tuple(classes), tuple(r.key for r in records), tuple(r.sha256 for r in records),
                    tuple(r.group or r.sha256 for r in records))


class CurrentModel(NamedTuple):
    """The model being retrained: loaded, its manifest, and the file it came from (which keys
    the LiteRT conversion cache)."""

    model: keras.Model
    manifest: ModelManifest
    artifact: Path


async def load_current(registry: ModelRegistry, work_dir: Path) -> CurrentModel:
    """The current model; raises Unprocessable for an empty registry."""
    current = await registry.current_version()
    if current is None:
        raise Unprocessable("the registry has no current model to retrain from", code="no_current_model")
    artifact = await registry.fetch(current, work_dir / "models") / "model.keras"
    model = await asyncio.to_thread(keras.saving.load_model, artifact, compile=False)
    return CurrentModel(model, await registry.manifest(current), artifact)


def embedder(model: keras.Model, artifact: Path, cache_dir: Path | None,
             log: Log) -> Callable[[np.ndarray], np.ndarray]:
    """images -> embeddings, on LiteRT (its conversion of the embedding part of `artifact`, cached
    in `cache_dir` by the file's hash) when it converts and matches TensorFlow within 1e-3, else
    TensorFlow."""
    forward = compiled_forward(embedding_model(model))

    def tensorflow(images: np.ndarray) -> np.ndarray:
        return np.asarray(forward(images.astype(np.float32)))

    try:
        from shared.litert import LiteRTForward, convert

        lite = LiteRTForward(convert(embedding_model(model), artifact, cache_dir, part="embedding"),
                             threads=2)
        probe = np.random.default_rng(0).integers(0, 256, (2, *model.input_shape[1:]), dtype=np.uint8)
        gap = float(np.abs(lite(probe)[0] - tensorflow(probe)).max())
        if gap > 1e-3 * (1.0 + float(np.abs(tensorflow(probe)).max())):
            raise ValueError(f"LiteRT embeddings differ from TensorFlow's by {gap:.3g}")
    except Exception as exc:  # noqa: BLE001 - a layer LiteRT cannot convert, a missing runtime, a mismatch
        log(f"embeddings on TensorFlow: LiteRT unavailable ({exc})")
        return tensorflow
    return lambda images: np.asarray(lite(images)[0])


async def ensure_embeddings(store: ObjectStore, current: CurrentModel, records: list[ImageRecord], *,
                            batch_size: int, progress: Progress, log: Log,
                            cache_dir: Path | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """Embeddings of `records` under the current model's backbone: cached ones read, missing ones
    computed (on LiteRT, see `embedder`; its conversion cached in `cache_dir`) and cached. Returns
    (backbone id, embeddings by hash)."""
    model, manifest, artifact = current
    backbone_id = manifest.backbone_version or manifest.version
    cache = await load_cache(store, backbone_id)
    missing = [r for r in records if r.sha256 not in cache]
    progress.update(phase="embedding", embedded=0, to_embed=len(missing), cached=len(cache))
    if missing:
        computed = await embed(
            store, missing, await asyncio.to_thread(embedder, model, artifact, cache_dir, log),
            manifest.input_size, policy=manifest.preprocessing, batch_size=batch_size,
            on_progress=lambda n: progress.update(embedded=n))
        await save_shard(store, backbone_id, computed)
        cache.update(computed)
    log(f"embeddings: {len(missing)} computed, {len(records) - len(missing)} from the cache")
    return backbone_id, cache


