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
from shared.taxonomy import admissible, decide
from shared.verdict import GateResult
from trainer_service.artifacts import save_artifact
from trainer_service.calibration import expected_calibration_error, softmax
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
from trainer_service.ood import FLAGGED, OodFit, fit_ood, ood_of, threshold_for, with_ood_output
from trainer_service.operating import Scored
from trainer_service.settings import TrainerSettings
from trainer_service.steps import calibrate, describe
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
    return fit, OodDetector(dims=fit.projection.shape[1], threshold=threshold, flagged=FLAGGED,
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


@dataclass
class CatalogData:
    """The data step: the catalog split for a head retrain (one `train` image in ten validates,
    the `eval` images are held out for the gate) and their cached embeddings as arrays."""

    records: list[ImageRecord]
    classes: list[str]
    train: list[ImageRecord]
    fit: list[ImageRecord]
    validation: list[ImageRecord]
    held: list[ImageRecord]
    backbone_id: str
    x_fit: np.ndarray
    y_fit: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_held: np.ndarray
    y_held: np.ndarray


async def catalog_data(store: ObjectStore, current: CurrentModel, settings: TrainerSettings, *,
                       progress: Progress, log: Log) -> CatalogData:
    """The catalog's images for a retrain of `current`'s head, embedded (cached under its
    backbone). Classes are the current model's plus those the training images have. Raises
    Unprocessable when there is nothing to train on."""
    records = await Catalog(store).records()
    parent = current.manifest
    classes = sorted(set(parent.classes) | {r.label for r in records if r.split == "train"})
    train = [r for r in records if r.split == "train"]
    held = [r for r in records if r.split == "eval" and r.label in classes]
    if not train:
        raise Unprocessable("no training images: import a dataset or upload labelled images first",
                            code="no_training_data")
    log(f"dataset: {counts(records)}; retraining the head of {parent.version}")
    backbone_id, cache = await ensure_embeddings(store, current, train + held,
                                                 batch_size=settings.embed_batch_size, progress=progress,
                                                 log=log, cache_dir=settings.work_dir / "litert")
    index = {name: i for i, name in enumerate(classes)}
    fit = [r for r in train if not _is_validation(r)] or train
    validation = [r for r in train if _is_validation(r)] or train
    held = held or validation

    def arrays(subset: list[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
        return (np.stack([cache[r.sha256] for r in subset]).astype(np.float32),
                np.array([index[r.label] for r in subset]))

    return CatalogData(records, classes, train, fit, validation, held, backbone_id,
                       *arrays(fit), *arrays(validation), *arrays(held))


@dataclass
class Fitted:
    """The fit step: the candidate network (logits, before calibration), its logits on the
    validation and held-out images, and the embeddings its detector is fitted on."""

    model: keras.Model
    val_logits: np.ndarray
    held_logits: np.ndarray
    x_fit: np.ndarray
    x_val: np.ndarray
    backbone_id: str


async def fit_candidate(store: ObjectStore, current: CurrentModel, data: CatalogData,
                        options: TrainOptions, *, version: str, settings: TrainerSettings,
                        progress: Progress, log: Log) -> Fitted:
    """A new head on the embeddings, warm-started from the current head (anchored to it for the
    classes it knows), each epoch's figures in `progress`; with `options.fine_tune` the backbone
    is then fine-tuned on the images too (its embeddings are then cached under `version`)."""
    model, parent = current.model, current.manifest
    classes = data.classes
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
        fit_head, data.x_fit, data.y_fit, len(classes), epochs=options.epochs, init=init,
        on_epoch=on_epoch, validation=(data.x_val, data.y_val),
        anchor_strength=settings.head_anchor_strength,
        anchored=np.array([name in parent.classes for name in classes], dtype=float))
    new_model = build_classifier(model.get_layer("backbone"), len(classes))
    new_model.get_layer(LOGITS).set_weights([kernel, bias])
    if not options.fine_tune:
        return Fitted(new_model, data.x_val @ kernel + bias, data.x_held @ kernel + bias, data.x_fit,
                      data.x_val, data.backbone_id)
    progress.update(phase="fine-tuning")
    sets = [await load_images(store, subset, classes, parent.input_size, parent.preprocessing)
            for subset in (data.fit, data.validation, data.held)]
    recipe = Recipe(epochs=options.fine_tune_epochs, max_minutes=options.max_minutes,
                    steps_per_epoch=max(1, len(data.fit) // Recipe.batch_size),
                    first_trainable=(Recipe.first_trainable if parent.backbone.startswith("efficientnet_lite")
                                     else None))
    await asyncio.to_thread(fine_tune, new_model, sets[0], sets[1], recipe, log,
                            admissible=admissible(classes))
    val_logits = await asyncio.to_thread(held_out_logits, new_model, sets[1])
    held_logits = await asyncio.to_thread(held_out_logits, new_model, sets[2])
    embed_now = embedding_model(new_model)
    x_fit = await asyncio.to_thread(predict, embed_now, sets[0].images)
    x_val = await asyncio.to_thread(predict, embed_now, sets[1].images)
    return Fitted(new_model, val_logits, held_logits, x_fit, x_val, version)  # the backbone changed


@dataclass
class Evaluation:
    """The evaluate step: the candidate's and the current model's figures on the same held-out
    images, and the gate's verdict between them."""

    candidate: dict[str, Any]
    baseline: dict[str, Any]
    gate: GateResult


def evaluate_candidate(current: CurrentModel, data: CatalogData, fitted: Fitted, temperature: float,
                       settings: TrainerSettings, log: Log) -> Evaluation:
    """The held-out figures of the candidate (at `temperature`) and of the current model (its
    head on the same embeddings), and the gate's verdict under the settings' policy."""
    model, parent = current.model, current.manifest
    classes, allowed, y_held = data.classes, admissible(data.classes), data.y_held
    old_kernel, old_bias = model.get_layer(LOGITS).get_weights()
    current_probs = softmax(data.x_held @ old_kernel + old_bias, temperature_of(model))
    baseline_probs = _expand(current_probs, parent.classes, classes)
    baseline = classification_metrics(baseline_probs, y_held, tuple(classes))
    held_probs = softmax(fitted.held_logits, temperature)
    candidate = classification_metrics(held_probs, y_held, tuple(classes))
    candidate["ece_uncalibrated"] = expected_calibration_error(softmax(fitted.held_logits), y_held, allowed)
    gate = apply_gate(y_held, allowed[y_held, decide(held_probs, allowed)],
                      allowed[y_held, decide(baseline_probs, allowed)],
                      classes, settings.gate_policy())
    log(f"held-out balanced accuracy {candidate['balanced_accuracy']:.4f} "
        f"(current {baseline['balanced_accuracy']:.4f}); gate {'passed' if gate.passed else 'failed'}: "
        + "; ".join(gate.reasons))
    return Evaluation(candidate, baseline, gate)


async def retrain_head(store: ObjectStore, registry: ModelRegistry, options: TrainOptions, *,
                       version: str, settings: TrainerSettings, progress: Progress, log: Log) -> Outcome:
    """Train a candidate from the store's catalog and judge it; does not publish or promote.

    The steps: data (`catalog_data`: the catalog's `train` images, one in ten validating, and its
    `eval` images, for the gate only), fit (`fit_candidate`), calibrate (`steps.calibrate`, as
    the base training command: temperature, referral and uncertainty thresholds on validation),
    evaluate (`evaluate_candidate`: held-out figures and the gate) and describe
    (`steps.describe`). The gate policy, referral recall and uncertainty target come from
    `settings`. Raises Unprocessable when there is nothing to train on or no current model to
    start from.
    """
    started = time.monotonic()
    current = await load_current(registry, settings.work_dir)
    parent = current.manifest
    data = await catalog_data(store, current, settings, progress=progress, log=log)
    fitted = await fit_candidate(store, current, data, options, version=version, settings=settings,
                                 progress=progress, log=log)
    progress.update(phase="calibrating")
    classes, allowed = data.classes, admissible(data.classes)
    calibration = calibrate([Scored("catalog", fitted.val_logits, data.y_val)], classes, allowed,
                            referral_recall=settings.referral_recall,
                            referral_confidence=settings.referral_confidence,
                            uncertain_below_accuracy=settings.uncertain_below_accuracy)
    referral = dict(calibration.referral)
    # too few validation cases to choose one: keep the current one
    for name, point in parent.referral.items():
        if name in classes and name not in referral:
            referral[name] = point.model_copy(update={"basis": f"inherited from {parent.version}"})
    evaluation = evaluate_candidate(current, data, fitted, calibration.temperature, settings, log)

    detector = _detector(current.model, parent, fitted.x_fit, data.y_fit, fitted.x_val,
                         refit=options.fine_tune or len(fitted.x_fit) >= settings.ood_refit_min_images)
    new_model = with_ood_output(with_temperature(fitted.model, calibration.temperature), detector[0])
    progress.update(phase="saving")
    snapshot = sorted(r.sha256 for r in data.train)
    baseline = evaluation.baseline
    manifest = describe(
        version, classes, temperature=calibration.temperature, referral=referral,
        uncertainty=calibration.uncertainty,
        input_size=parent.input_size, preprocessing=parent.preprocessing, backbone=parent.backbone,
        parent_version=parent.version,
        training_data={"images": len(data.train), "held_out": len(data.held),
                       "counts": counts(data.records), "snapshot_sha256": digest(snapshot),
                       "snapshot_key": f"models/{version}/snapshot.json"},
        metrics={"eval": evaluation.candidate, "current_on_same_eval": {
            k: baseline[k] for k in ("balanced_accuracy", "accuracy", "per_class", "ece")}},
        ood=detector[1], backbone_version=fitted.backbone_id, gate=evaluation.gate,
        recipe={"kind": "fine_tune" if options.fine_tune else "head_only", **options.model_dump()},
        training_seconds=round(time.monotonic() - started, 2))
    directory = await asyncio.to_thread(save_artifact, new_model, manifest,
                                        settings.work_dir / "versions" / version)
    return Outcome(manifest, directory, evaluation.gate, snapshot)
