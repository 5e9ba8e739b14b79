"""Retraining from the object store: a new head on the served model's backbone, fitted on its
training evidence plus the catalog's new images, judged on evidence that can show a change.

The steps (`retrain_head`): data (`retrain_data.gather`: the parent's evidence and the catalog's
new images), fit (`fit_candidate`: a class- and source-balanced head warm-started from the
current one), then off the event loop the operating points (class biases, temperature, referral
and uncertainty thresholds on the validation evidence, per source), the gate (`judge`: the
candidate against the served model on the lineage's reference images and on the catalog's held-out
uploads, each apart) and the candidate's graph; finally the manifest and the evidence it leaves
for the next retrain. A fine-tune (`options.fine_tune`) changes the backbone, so the evidence no
longer describes it: it trains and is judged on the catalog's images, and is refused unless the
catalog holds enough of them (`fine_tune.check_catalog`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from shared.catalog import counts, digest
from shared.manifest import ModelManifest, OodDetector, ReferralThreshold
from shared.messages import TrainOptions
from shared.registry import ModelRegistry
from shared.store import ObjectStore
from shared.taxonomy import MALIGNANT, admissible, decide
from shared.verdict import GatePolicy, GateResult, GateSet
from trainer_service.ml.artifacts import export_litert_apart, save_artifact
from trainer_service.ml.calibration import expected_calibration_error, softmax
from trainer_service.ml.current_model import (
    CurrentModel,
    Log,
    Progress,
    embedder,
    ensure_embeddings,
    load_current,
    load_images,
)
from trainer_service.ml.evaluation import classification_metrics
from trainer_service.ml.gate import Answers, combine, judge_set, label_audit
from trainer_service.ml.head import fit_head
from trainer_service.ml.network import LOGITS, build_classifier, temperature_of, with_temperature
from trainer_service.ml.ood import OodFit, fit_ood, ood_of, threshold_for, with_ood_output
from trainer_service.ml.operating import Scored
from trainer_service.ml.retrain_data import Rows, TrainingData, gather
from trainer_service.ml.steps import OperatingPoints, describe, operating_points
from trainer_service.settings import TrainerSettings

__all__ = ["CurrentModel", "Outcome", "Progress", "embedder", "ensure_embeddings", "load_current",
           "load_images", "retrain_head"]


@dataclass
class Outcome:
    """A trained candidate, on disk, with the gate's verdict and the evidence it was trained on."""

    manifest: ModelManifest
    directory: Path
    gate: GateResult
    snapshot: list[str]
    evidence: bytes | None = None


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


def answers(probabilities: np.ndarray, labels: np.ndarray, classes: list[str],
            referral: dict[str, ReferralThreshold]) -> Answers:
    """What a model with these (calibrated) probabilities and referral thresholds tells a
    clinician about each image: its top label right or not, and for each malignant class whether
    the answer names it or flags it for referral."""
    allowed = admissible(classes)
    top = decide(probabilities, allowed)
    caught = {}
    for name in MALIGNANT:
        if name in classes:
            c = classes.index(name)
            named = allowed[c, top].astype(bool)
            point = referral.get(name)
            caught[name] = named | (probabilities @ allowed[c] >= point.threshold) if point else named
    return Answers(allowed[labels, top], caught)


def recall_floor(bias: np.ndarray, logits: np.ndarray, served: np.ndarray, labels: np.ndarray,
                 classes: list[str], log: Log, *, step: float = 0.05, most: float = 2.0) -> np.ndarray:
    """`bias` with each malignant class's entry raised (by `step`, at most `most` in all) until the
    candidate's top-label recall of it on the validation images (`logits` before the bias) is no
    lower than the served model's (`served` probabilities): what the gate then checks on held-out
    images, chosen here on validation."""
    allowed = admissible(classes)
    out = bias.copy()
    for name in MALIGNANT:
        c = classes.index(name) if name in classes else -1
        positive = labels == c
        if c < 0 or not positive.any():
            continue
        target = allowed[c, decide(served[positive], allowed)].mean()

        def recall(c: int = c, positive: np.ndarray = positive) -> float:
            return float(allowed[c, decide(softmax(logits[positive] + out), allowed)].mean())

        start = recall()
        while recall() < target and out[c] - bias[c] < most:
            out[c] += step
        if out[c] != bias[c]:
            log(f"class bias of {name} raised {out[c] - bias[c]:+.2f}: validation recall {start:.3f} -> "
                f"{recall():.3f} (served model {target:.3f})")
    return out


def no_less_sensitive(candidate: np.ndarray, served: np.ndarray, labels: np.ndarray, classes: list[str],
                      referral: dict[str, ReferralThreshold], served_referral: dict[str, ReferralThreshold],
                      log: Log) -> dict[str, ReferralThreshold]:
    """The candidate's referral thresholds, each lowered where needed so that on the validation
    images (`candidate` and `served` probabilities over `classes`) the candidate names or flags at
    least as many images of each malignant class as the served model does: a retrain may move the
    head, never what a clinician is told about a melanoma. Chosen on validation, like the rest."""
    allowed = admissible(classes)
    before = answers(served, labels, classes, served_referral).caught
    out = dict(referral)
    for name, point in referral.items():
        c = classes.index(name)
        positive = labels == c
        need = int(before.get(name, np.zeros(0, bool))[positive].sum()) if name in before else 0
        named = allowed[c, decide(candidate, allowed)].astype(bool)[positive]
        scores = np.sort((candidate @ allowed[c])[positive][~named])[::-1]
        have = int(named.sum() + (scores >= point.threshold).sum())
        if have >= need or need - int(named.sum()) > len(scores):
            continue
        threshold = float(scores[need - int(named.sum()) - 1])
        log(f"referral threshold of {name} lowered {point.threshold:.4f} -> {threshold:.4f}: "
            f"the served model names or flags {need} of {int(positive.sum())} validation images of it, "
            f"the candidate {have}")
        out[name] = point.model_copy(
            update={"threshold": threshold,
                    "basis": f"{point.basis}; lowered to catch as many as the served model"})
    return out


@dataclass
class Head:
    """The fit step: the new head's weights (before the class biases) on the run's classes."""

    kernel: np.ndarray
    bias: np.ndarray

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x @ self.kernel + self.bias)


async def fit_candidate(current: CurrentModel, data: TrainingData, options: TrainOptions, *,
                        settings: TrainerSettings, progress: Progress) -> Head:
    """A new head on the fit rows, warm-started from the current head (anchored to it for the
    classes it knows), balanced over classes and, inside each class, over sources; each epoch's
    figures in `progress`."""
    model, parent = current.model, current.manifest
    old_kernel, old_bias = model.get_layer(LOGITS).get_weights()
    init = _warm_start(old_kernel, old_bias, parent.classes, data.classes)
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
        fit_head, data.fit.x, data.fit.y, len(data.classes), epochs=options.epochs, init=init,
        on_epoch=on_epoch, validation=(data.validation.x, data.validation.y), strata=data.fit.strata(),
        admissible=admissible(data.classes), anchor_strength=settings.head_anchor_strength,
        anchored=np.array([name in parent.classes for name in data.classes], dtype=float))
    return Head(kernel, bias)


def _scored(rows: Rows, logits: np.ndarray) -> list[Scored]:
    return [Scored(str(source), logits[rows.sources == source], rows.y[rows.sources == source])
            for source in sorted(set(rows.sources.tolist()))]


@dataclass
class Judged:
    """Everything decided after the fit: operating points, held-out figures, the gate's verdict,
    and the candidate's full graph."""

    points: OperatingPoints
    referral: dict[str, ReferralThreshold]
    metrics: dict[str, Any]
    gate: GateResult
    detector: OodDetector
    model: keras.Model


def _basis(rows: Rows, classes: list[str], name: str) -> str:
    per_source = {s: n.get(name, 0) for s, n in rows.counts(classes).items()}
    return "validation: " + ", ".join(f"{n} {name} images from {s}" for s, n in per_source.items() if n)


def _detector(current: CurrentModel, data: TrainingData, *, refit: bool,
              flagged: float) -> tuple[OodFit, OodDetector]:
    """The candidate's out-of-distribution detector: the served model's (same backbone, so the same
    embeddings; it was fitted on the whole fit evidence) unless the catalog added `refit`-worthy
    images, then fitted again on every fit row, its threshold flagging a `flagged` share of the
    validation rows."""
    parent, sources = current.manifest, data.validation.sources

    def share(flags: np.ndarray) -> dict[str, float]:  # validation images flagged, per source
        return {str(s): float(flags[sources == s].mean()) for s in np.unique(sources)}

    inherited = None if refit or parent.ood is None else ood_of(current.model)
    if inherited is not None and parent.ood is not None:
        shares = share(inherited.scores(data.validation.x) > parent.ood.threshold)
        return inherited, parent.ood.model_copy(update={"basis": f"inherited from {parent.version}",
                                                        "validation_flagged": shares})
    fit = fit_ood(data.fit.x, data.fit.y)
    scores = fit.scores(data.validation.x)
    threshold = threshold_for(scores, flagged=flagged)
    return fit, OodDetector(dims=fit.projection.shape[1], threshold=threshold, flagged=flagged,
                            validation_flagged=share(scores > threshold))


def _audit(current: CurrentModel, data: TrainingData, policy: GatePolicy) -> list[str]:
    """`gate.label_audit` of the images this retrain adds, against the parent's validation rows."""
    added = data.evidence.source_names(np.arange(len(data.evidence)))[data.inherited:]
    if not len(added):
        return []
    rows = np.arange(data.inherited, len(data.evidence))
    x, labels = data.evidence.embeddings(rows), np.array([data.classes.index(c)
                                                          for c in data.evidence.label_names(rows)])
    inherited = np.zeros(len(data.evidence), bool)
    inherited[:data.inherited] = True
    reference = inherited & data.evidence.mask("validation")
    x_ref = data.evidence.embeddings(reference)
    y_ref = np.array([data.classes.index(c) for c in data.evidence.label_names(reference)], np.int64)
    kernel, bias = current.model.get_layer(LOGITS).get_weights()
    parent, classes, temperature = current.manifest, data.classes, temperature_of(current.model)

    def caught(embeddings: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        probabilities = _expand(softmax(embeddings @ kernel + bias, temperature), parent.classes, classes)
        return answers(probabilities, y, classes, parent.referral).caught

    return label_audit(labels, caught(x, labels), y_ref, caught(x_ref, y_ref), classes, policy)


def judge(current: CurrentModel, data: TrainingData, head: Head, settings: TrainerSettings,
          log: Log) -> Judged:
    """Operating points on the validation evidence, then the gate on every held-out set, then the
    candidate's graph. CPU-bound: run it in a thread.

    No cross-validated class biases here: the head is already trained class- and source-balanced,
    and on the bundled model's evidence the span cross-validation chose moved from run to run (0.5
    to 2.0), trading 5-8 points of nevus or keratosis recall either way. Only malignant classes get
    a bias, and only as far as keeping their validation recall (`recall_floor`); their referral
    thresholds keep what the served model catches on validation (`no_less_sensitive`)."""
    model, parent, classes = current.model, current.manifest, data.classes
    allowed = admissible(classes)
    old_kernel, old_bias = model.get_layer(LOGITS).get_weights()
    rows = data.validation
    served_validation = _expand(softmax(rows.x @ old_kernel + old_bias, temperature_of(model)),
                                parent.classes, classes)
    logits = head.logits(rows.x)
    points = operating_points(_scored(rows, logits), classes, allowed,
                              policy=settings.operating_policy(),
                              fit_bias=False,  # see `judge`'s docstring
                              floor=lambda bias: recall_floor(bias, logits, served_validation, rows.y,
                                                              classes, log))
    temperature = points.calibration.temperature
    referral = no_less_sensitive(
        softmax(head.logits(rows.x) + points.class_bias, temperature), served_validation, rows.y, classes,
        {name: point.model_copy(update={"basis": _basis(rows, classes, name)})
         for name, point in points.calibration.referral.items()}, parent.referral, log)
    for name in MALIGNANT:
        if name in classes and name not in referral:
            log(f"no referral threshold for {name}: fewer than 10 validation images of it in every source")
    policy = settings.gate_policy()
    sets: list[GateSet] = []
    metrics: dict[str, Any] = {}
    described = {"reference": f"the lineage's held-out reference images (of {parent.version}'s evidence)",
                 "uploads": "the catalog's held-out images not in the evidence"}
    for name, held in (("reference", data.reference), ("uploads", data.uploads)):
        if not len(held):
            continue
        served = _expand(softmax(held.x @ old_kernel + old_bias, temperature_of(model)),
                         parent.classes, classes)
        candidate = softmax(head.logits(held.x) + points.class_bias, temperature)
        sets.append(judge_set(name, described[name], held.y, answers(candidate, held.y, classes, referral),
                              answers(served, held.y, classes, parent.referral), classes, policy,
                              sources=held.sources))
        figures = classification_metrics(candidate, held.y, tuple(classes))
        figures["ece_uncalibrated"] = expected_calibration_error(softmax(head.logits(held.x)), held.y,
                                                                 allowed)
        before = {k: v for k, v in classification_metrics(served, held.y, tuple(classes)).items()
                  if k in ("balanced_accuracy", "accuracy", "per_class", "ece")}
        metrics.setdefault("eval", figures)  # the first set's: what the job result and metrics report
        metrics.setdefault("current_on_same_eval", before)
        metrics.setdefault("eval_set", name)
        metrics.setdefault("by_set", {})[name] = {"candidate": figures, "current": before}
    gate = combine(sets, classes, policy, findings=_audit(current, data, policy))
    log(f"gate {'passed' if gate.passed else 'failed'}: " + "; ".join(gate.reasons))
    detector = _detector(current, data, refit=len(data.added) >= settings.ood_refit_min_images,
                         flagged=settings.operating_policy().ood_flagged)
    network = build_classifier(model.get_layer("backbone"), len(classes))
    network.get_layer(LOGITS).set_weights([head.kernel, head.bias + points.class_bias.astype(np.float32)])
    candidate_model = with_ood_output(with_temperature(network, temperature), detector[0])
    return Judged(points, referral, metrics, gate, detector[1], candidate_model)


async def retrain_head(store: ObjectStore, registry: ModelRegistry, options: TrainOptions, *,
                       version: str, settings: TrainerSettings, progress: Progress, log: Log) -> Outcome:
    """Train a candidate from the served model's evidence and the store's catalog and judge it;
    does not publish or promote. Raises Unprocessable when there is nothing to train, validate or
    judge on, no current model to start from, or (fine-tuning) too few catalog images."""
    started = time.monotonic()
    current = await load_current(registry, settings.work_dir)
    if options.fine_tune:
        from trainer_service.ml.fine_tune import fine_tune_candidate

        return await fine_tune_candidate(store, current, options, version=version, settings=settings,
                                         progress=progress, log=log)
    parent = current.manifest
    data = await gather(store, registry, current, settings, progress=progress, log=log)
    log(f"retraining the head of {parent.version} on {len(data.fit)} images "
        f"({data.inherited} rows of its evidence, {len(data.added)} catalog images added)")
    head = await fit_candidate(current, data, options, settings=settings, progress=progress)
    progress.update(phase="calibrating")
    judged = await asyncio.to_thread(judge, current, data, head, settings, log)
    progress.update(phase="saving")
    snapshot = sorted(r.sha256 for r in data.records if r.split == "train")
    manifest = describe(
        version, data.classes, temperature=judged.points.calibration.temperature, referral=judged.referral,
        uncertainty=judged.points.calibration.uncertainty, input_size=parent.input_size,
        preprocessing=parent.preprocessing, backbone=parent.backbone, parent_version=parent.version,
        training_data={"images": len(data.fit), "held_out": len(data.reference) + len(data.uploads),
                       "evidence": data.summary(), "counts": counts(data.records),
                       "snapshot_sha256": digest(snapshot),
                       "snapshot_key": f"models/{version}/snapshot.json"},
        metrics=judged.metrics, ood=judged.detector, backbone_version=data.backbone_id, gate=judged.gate,
        class_bias=judged.points.class_bias.tolist(),
        recipe={"kind": "head_only", **options.model_dump(), "class_bias_span": judged.points.span},
        training_seconds=round(time.monotonic() - started, 2))
    directory = await asyncio.to_thread(save_artifact, judged.model, manifest,
                                        settings.work_dir / "versions" / version, litert=False)
    await export_litert_apart(directory, manifest)
    evidence = await asyncio.to_thread(data.evidence.to_bytes)
    return Outcome(manifest, directory, judged.gate, snapshot, evidence)

