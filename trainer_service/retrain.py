"""Retraining from the object store: a new head on cached embeddings of the current backbone.

The dataset is the catalog's `train` images (imported set plus uploads); the held-out `eval`
images decide the promotion gate. Classes the current model lacks but the uploads have extend
the head; the current head's weights warm-start the classes it knows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np

from shared.catalog import Catalog, ImageRecord, counts, digest
from shared.errors import Unprocessable
from shared.manifest import ModelManifest, OodDetector
from shared.messages import TrainOptions
from shared.registry import ModelRegistry
from shared.store import ObjectStore
from shared.taxonomy import MALIGNANT, PARENTS, admissible, decide
from shared.verdict import GateResult
from trainer_service.artifacts import code_version, save_artifact
from trainer_service.calibration import expected_calibration_error, fit_temperature, softmax
from trainer_service.classifier import (
    LOGITS,
    build_classifier,
    embedding_model,
    temperature_of,
    with_temperature,
)
from trainer_service.dataset import ImageSet
from trainer_service.embeddings import embed, load_cache, save_shard
from trainer_service.evaluation import classification_metrics, compiled_forward, predict
from trainer_service.gate import apply_gate
from trainer_service.head import fit_head
from trainer_service.ood import OodFit, fit_ood, ood_of, threshold_for, with_ood_output
from trainer_service.operating import Scored, referral_thresholds, uncertainty_threshold
from trainer_service.settings import TrainerSettings
from trainer_service.training import Recipe, fine_tune, held_out_logits

Log = Callable[[str], None]
VALIDATION_EVERY = 10  # one training image in ten calibrates the temperature


@dataclass
class Outcome:
    """A trained candidate, on disk, with the gate's verdict."""

    manifest: ModelManifest
    directory: Path
    gate: GateResult
    snapshot: list[str]


@dataclass
class Progress:
    """What a running job reports; read by the job heartbeat while training runs in threads."""

    values: dict[str, Any] = field(default_factory=dict)

    def update(self, **values: Any) -> None:
        self.values.update(values)


def _is_validation(record: ImageRecord) -> bool:
    return int(record.sha256[8:16], 16) % VALIDATION_EVERY == 0


def _detector(model: keras.Model, parent: ModelManifest, x_fit: np.ndarray, y_fit: np.ndarray,
              x_val: np.ndarray,
              *, refit: bool) -> tuple[OodFit, OodDetector]:
    """The candidate's out-of-distribution detector: refitted on the catalog's embeddings, or (a
    head-only retrain on a small catalog, where the backbone and so the embeddings are unchanged)
    the current model's, which was fitted on far more images."""
    inherited = None if refit or parent.ood is None else ood_of(model)
    if inherited is not None and parent.ood is not None:
        flagged = float((inherited.scores(x_val) > parent.ood.threshold).mean())
        return inherited, parent.ood.model_copy(update={
            "basis": f"inherited from {parent.version}", "validation_flagged": {"catalog": flagged}})
    fit = fit_ood(x_fit, y_fit)
    scores = fit.scores(x_val)
    threshold = threshold_for(scores)
    return fit, OodDetector(dims=fit.projection.shape[1], threshold=threshold,
                            validation_flagged={"catalog": float((scores > threshold).mean())})


def _warm_start(old_kernel: np.ndarray, old_bias: np.ndarray, old_classes: list[str],
                classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 0.01, (old_kernel.shape[0], len(classes))).astype(np.float32)
    bias = np.full(len(classes), float(old_bias.min()), np.float32)
    for j, name in enumerate(classes):
        if name in old_classes:
            i = old_classes.index(name)
            kernel[:, j], bias[j] = old_kernel[:, i], old_bias[i]
    return kernel, bias


def _expand(probabilities: np.ndarray, own: list[str], classes: list[str]) -> np.ndarray:
    """Probabilities over `own` classes laid out over `classes` (unknown classes get 0)."""
    out = np.zeros((len(probabilities), len(classes)))
    for i, name in enumerate(own):
        out[:, classes.index(name)] = probabilities[:, i]
    return out


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


async def retrain_head(store: ObjectStore, registry: ModelRegistry, options: TrainOptions, *,
                       version: str, settings: TrainerSettings, progress: Progress, log: Log) -> Outcome:
    """Train a candidate from the store's catalog and judge it; does not publish or promote.

    Data: the catalog's `train` images (one in ten validates: temperature, thresholds, detector)
    and its `eval` images (the gate only). The gate policy, referral recall and uncertainty target
    come from `settings`. Raises Unprocessable when there is nothing to train on or no current
    model to start from.
    """
    started = time.monotonic()
    records = await Catalog(store).records()
    loaded = await load_current(registry, settings.work_dir)
    model, parent = loaded.model, loaded.manifest
    current = parent.version
    classes = sorted(set(parent.classes) | {r.label for r in records if r.split == "train"})
    train = [r for r in records if r.split == "train"]
    held = [r for r in records if r.split == "eval" and r.label in classes]
    if not train:
        raise Unprocessable("no training images: import a dataset or upload labelled images first",
                            code="no_training_data")
    log(f"dataset: {counts(records)}; retraining the head of {current}")

    backbone_id, cache = await ensure_embeddings(store, loaded, train + held,
                                                 batch_size=settings.embed_batch_size, progress=progress,
                                                 log=log,
                                                 cache_dir=settings.work_dir / "litert")

    index = {name: i for i, name in enumerate(classes)}
    fit = [r for r in train if not _is_validation(r)] or train
    validation = [r for r in train if _is_validation(r)] or train
    held = held or validation

    def arrays(subset: list[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
        return (np.stack([cache[r.sha256] for r in subset]).astype(np.float32),
                np.array([index[r.label] for r in subset]))

    x_fit, y_fit = arrays(fit)
    x_val, y_val = arrays(validation)
    old_kernel, old_bias = model.get_layer(LOGITS).get_weights()
    init = _warm_start(old_kernel, old_bias, parent.classes, classes)
    history: list[dict[str, float]] = []  # one row per epoch: what the live dashboard charts
    progress.update(phase="training", epoch=0, epochs=options.epochs, history=[])

    def on_epoch(epoch: int, logs: dict[str, float]) -> None:
        row = {"epoch": epoch, **{k: round(v, 4) for k, v in logs.items()
                                  if k in ("loss", "accuracy", "val_loss", "val_accuracy")}}
        history.append(row)  # a new list each time: the heartbeat may be saving the last one
        progress.update(epoch=epoch, loss=row.get("loss", 0.0), accuracy=row.get("accuracy", 0.0),
                        val_loss=row.get("val_loss"), val_accuracy=row.get("val_accuracy"),
                        history=list(history))

    kernel, bias = await asyncio.to_thread(
        fit_head, x_fit, y_fit, len(classes), epochs=options.epochs, init=init, on_epoch=on_epoch,
        validation=(x_val, y_val),
        anchor_strength=settings.head_anchor_strength,
        anchored=np.array([name in parent.classes for name in classes], dtype=float))
    x_held, y_held = arrays(held)
    allowed = admissible(classes)
    baseline_probs = _expand(softmax(x_held @ old_kernel + old_bias, temperature_of(model)), parent.classes,
                             classes)
    baseline = classification_metrics(baseline_probs, y_held, tuple(classes))
    new_model = build_classifier(model.get_layer("backbone"), len(classes))
    new_model.get_layer(LOGITS).set_weights([kernel, bias])
    if options.fine_tune:
        progress.update(phase="fine-tuning")
        sets = [await load_images(store, subset, classes, parent.input_size, parent.preprocessing)
                for subset in (fit, validation, held)]
        recipe = Recipe(epochs=options.fine_tune_epochs, max_minutes=options.max_minutes,
                        steps_per_epoch=max(1, len(fit) // Recipe.batch_size),
                        first_trainable=(Recipe.first_trainable if parent.backbone == "efficientnet_lite0"
                                         else None))
        await asyncio.to_thread(fine_tune, new_model, sets[0], sets[1], recipe, log, admissible=allowed)
        val_logits = await asyncio.to_thread(held_out_logits, new_model, sets[1])
        logits = await asyncio.to_thread(held_out_logits, new_model, sets[2])
        embed_now = embedding_model(new_model)
        x_fit = await asyncio.to_thread(predict, embed_now, sets[0].images)
        x_val = await asyncio.to_thread(predict, embed_now, sets[1].images)
        backbone_id = version  # the backbone changed: its embeddings are cached under this version
    else:
        val_logits, logits = x_val @ kernel + bias, x_held @ kernel + bias
    progress.update(phase="calibrating")
    temperature = fit_temperature(val_logits, y_val, allowed=allowed)
    new_model = with_temperature(new_model, temperature)
    held_probs = softmax(logits, temperature)
    candidate = classification_metrics(held_probs, y_held, tuple(classes))
    candidate["ece_uncalibrated"] = expected_calibration_error(softmax(logits), y_held, allowed)
    gate = apply_gate(y_held, allowed[y_held, decide(held_probs, allowed)],
                      allowed[y_held, decide(baseline_probs, allowed)],
                      classes, settings.gate_policy())
    log(f"held-out balanced accuracy {candidate['balanced_accuracy']:.4f} "
        f"(current {baseline['balanced_accuracy']:.4f}); gate {'passed' if gate.passed else 'failed'}: "
        + "; ".join(gate.reasons))

    detector = _detector(model, parent, x_fit, y_fit, x_val,
                         refit=options.fine_tune or len(x_fit) >= settings.ood_refit_min_images)
    new_model = with_ood_output(new_model, detector[0])
    checked = [Scored("catalog", softmax(val_logits, temperature), y_val)]
    referral = referral_thresholds(checked, classes, MALIGNANT, allowed,
                                   target_recall=settings.referral_recall,
                                   confidence=settings.referral_confidence)
    # too few validation cases to choose one: keep the current one
    for name, point in parent.referral.items():
        if name in classes and name not in referral:
            referral[name] = point.model_copy(update={"basis": f"inherited from {current}"})

    progress.update(phase="saving")
    snapshot = sorted(r.sha256 for r in train)
    manifest = ModelManifest(
        version=version, classes=classes, input_size=parent.input_size, preprocessing=parent.preprocessing,
        backbone=parent.backbone, parents={c: p for c, p in PARENTS.items() if c in classes and p in classes},
        temperature=temperature, parent_version=current, code_version=code_version(),
        training_data={"images": len(train), "held_out": len(held), "counts": counts(records),
                       "snapshot_sha256": digest(snapshot),
                       "snapshot_key": f"models/{version}/snapshot.json"},
        metrics={"eval": candidate, "current_on_same_eval": {
            k: baseline[k] for k in ("balanced_accuracy", "accuracy", "per_class", "ece")}},
        referral=referral,
        uncertainty=uncertainty_threshold(checked, allowed,
                                          target_accuracy=settings.uncertain_below_accuracy),
        ood=detector[1],
        backbone_version=backbone_id, gate=gate,
        recipe={"kind": "fine_tune" if options.fine_tune else "head_only", **options.model_dump()},
        training_seconds=round(time.monotonic() - started, 2))
    directory = await asyncio.to_thread(save_artifact, new_model, manifest,
                                        settings.work_dir / "versions" / version)
    return Outcome(manifest, directory, gate, snapshot)
