"""The `train` command's body (`run_job`, and `train` that writes its artifact), end to end:
sources -> split -> head -> fine-tune -> biases, temperature, referral thresholds (all on
validation) -> manifest; and what `refit` and `soup` share with it (lineage, operating points, the
OOD detector). What a model does on a labelled set is `trainer_service.commands.evaluate`'s."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from shared.imaging import DEFAULT_POLICY
from shared.manifest import ModelManifest, OodDetector
from shared.operating_policy import OperatingPolicy
from shared.taxonomy import admissible
from trainer_service.commands.cli import log_line, track_offline
from trainer_service.commands.evaluate import evaluate_on
from trainer_service.ml.artifacts import load_artifact, save_artifact
from trainer_service.ml.backbones import build_backbone
from trainer_service.ml.calibration import expected_calibration_error, softmax
from trainer_service.ml.checkpoint import Checkpoint
from trainer_service.ml.dataset import ImageSet, data_summary
from trainer_service.ml.evaluation import classification_metrics, format_report, predict
from trainer_service.ml.network import (
    LOGITS,
    build_classifier,
    embedding_model,
    logits_model,
    with_temperature,
    without_class_bias,
)
from trainer_service.ml.ood import OodFit, fit_ood, threshold_for, with_ood_output
from trainer_service.ml.operating import Scored
from trainer_service.ml.sources import (
    Source,
    combined,
    load_sources,
    per_source,
    recorded_split_seed,
    source_name,
)
from trainer_service.ml.steps import describe, operating_points
from trainer_service.ml.training import Log, Recipe, Scorer, fine_tune, train_head


@dataclass(frozen=True)
class JobSpec:
    """What to train: sources, backbone, input size, recipe, held-out shares, optional eval sets,
    and the operating policy the operating points are fitted to."""

    data: tuple[Path, ...]
    backbone: str = "efficientnet_lite0"
    input_size: tuple[int, int] = (160, 160)
    recipe: Recipe = field(default_factory=Recipe)
    validation_fraction: tuple[float, ...] = (0.1,)
    eval_data: tuple[Path, ...] = ()
    pretrained: bool = True
    policy: str = DEFAULT_POLICY
    operating: OperatingPolicy = field(default_factory=OperatingPolicy)
    work_dir: Path | None = None
    split_seed: int | None = None  # None: the recipe's seed; fix it to train ensemble members on one split
    init_from: Path | None = None  # an artifact whose network fine-tuning starts from (`continued_network`)

    @property
    def effective_split_seed(self) -> int:
        return self.recipe.seed if self.split_seed is None else self.split_seed


def _source_scores(model: keras.Model, sources: list[Source]) -> list[Scored]:
    forward = logits_model(model)
    return [Scored(s.name, predict(forward, s.validation.images), s.validation.labels) for s in sources]


def selection_scorer(sources: list[Source], allowed: np.ndarray, classes: tuple[str, ...]) -> Scorer:
    """Per epoch: the mean over sources of (balanced accuracy + melanoma AUC) / 2 on validation
    (balanced accuracy alone where a source has no melanoma)."""

    def score(model: keras.Model) -> tuple[float, dict[str, float]]:
        figures: dict[str, float] = {}
        parts = []
        for scored in _source_scores(model, sources):
            m = classification_metrics(softmax(scored.values), scored.labels, classes)
            figures[f"{scored.source}_bacc"] = m["balanced_accuracy"]
            auc = m["per_class"].get("melanoma", {}).get("auc")
            if auc is not None:
                figures[f"{scored.source}_mel_auc"] = auc
                parts.append((m["balanced_accuracy"] + auc) / 2)
            else:
                parts.append(m["balanced_accuracy"])
        return float(np.mean(parts)), figures

    return score


def run_job(spec: JobSpec, version: str, log: Log, *,
            parent_version: str | None = None) -> tuple[keras.Model, ModelManifest]:
    """Train on every source of `spec.data`, fit the operating points on their validation parts,
    and describe the result.

    Returns the calibrated model (probabilities out) and its manifest. Nothing is fitted or chosen
    on `spec.eval_data`; those sets are only measured. With `spec.work_dir` the decoded images are
    cached and fine-tuning checkpoints there, so the same call resumes an interrupted run.
    Raises FileNotFoundError for a missing dataset.
    """
    started = time.monotonic()
    keras.utils.set_random_seed(spec.recipe.seed)
    cache = spec.work_dir / "decoded" if spec.work_dir else None
    classes, sources = load_sources(list(spec.data), spec.input_size, policy=spec.policy,
                                    fractions=list(spec.validation_fraction),
                                    seed=spec.effective_split_seed, cache_dir=cache)
    train, strata = combined(sources)
    allowed = admissible(classes)
    for s in sources:
        log(f"data {s.name}: {len(s.fit.files)} fit / {len(s.validation.files)} validation; {s.fit.counts()}")
    log(f"data: {time.monotonic() - started:.0f}s")

    checkpoint = Checkpoint(spec.work_dir / "checkpoint") if spec.work_dir else None
    if spec.init_from is not None:
        model, init_version = continued_network(spec, classes)
        parent_version = parent_version or init_version
        log(f"fine-tune: starting from {spec.init_from} ({init_version})")
    else:
        model = build_classifier(build_backbone(spec.backbone, spec.input_size, pretrained=spec.pretrained),
                                 len(classes))
        if checkpoint is None or not checkpoint.exists():
            train_head(model, train, spec.recipe, log)
    history = fine_tune(model, train, sources[0].validation, spec.recipe, log, strata=strata,
                        admissible=allowed,
                        score=selection_scorer(sources, allowed, classes), checkpoint=checkpoint)
    recipe = {**asdict(spec.recipe), "validation_fraction": list(spec.validation_fraction),
              "pretrained": spec.pretrained, **spec.operating.as_recipe(),
              "sources": [str(p) for p in spec.data], "split_seed": spec.split_seed,
              **({"init_from": init_version} if spec.init_from is not None else {})}
    return finish(model, spec, version, classes, sources, train, log, recipe=recipe, history=history,
                  parent_version=parent_version, started=started)


def train(spec: JobSpec, version: str, out: Path, *, parent_version: str | None = None) -> int:
    """The `train` command once its options are read: `run_job`, its artifact written to `out`,
    the run logged to MLflow (`track_offline`) and each source's validation report printed.
    Returns the exit status: 0, or 2 with the reason on stderr when the job refuses its inputs."""
    try:
        model, manifest = run_job(spec, version, log_line, parent_version=parent_version)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    save_artifact(model, manifest, out)
    track_offline("train", manifest)
    for name, figures in manifest.metrics["validation"].items():
        print(f"validation {name}:\n{format_report(figures)}\n")
    log_line(f"wrote {out}")
    return 0


def finish(network: keras.Model, spec: JobSpec, version: str, classes: tuple[str, ...], sources: list[Source],
           train: ImageSet, log: Log, *, recipe: dict[str, Any], history: list[dict[str, Any]],
           parent_version: str | None, started: float) -> tuple[keras.Model, ModelManifest]:
    """A trained `network` (pixels -> logits) made a model version: operating points fitted on the
    validation parts of `sources`, the OOD detector on `train` (their fit parts, combined),
    `spec.eval_data` measured, and the manifest described with `recipe` and `history`."""
    model, operating = fit_operating_points(network, sources, classes, spec.operating, log)
    model, detector = fit_detector(model, train, sources, log, flagged=spec.operating.ood_flagged)
    metrics: dict[str, Any] = {"validation": operating.pop("validation")}
    for root in spec.eval_data:
        name = f"{source_name(root)}/{root.name}"
        metrics.setdefault("eval", {})[name] = evaluate_on(model, root, spec.input_size, classes, spec.policy)
        log(f"eval {name}: balanced accuracy {metrics['eval'][name]['balanced_accuracy']:.4f}")

    manifest = describe(
        version, list(classes), temperature=operating["temperature"], referral=operating["referral"],
        uncertainty=operating["uncertainty"],
        input_size=spec.input_size,
        preprocessing=spec.policy,
        backbone=spec.backbone,
        parent_version=parent_version,
        training_data={
            "sources": {s.name: {"fit": data_summary(s.fit),
                                 "validation": data_summary(s.validation)} for s in sources},
            **data_summary(train),
        },
        metrics=metrics,
        ood=detector,
        class_bias=operating["class_bias"],
        recipe=recipe,
        history=history,
        training_seconds=round(time.monotonic() - started, 1),
    )
    return model, manifest


def continued_network(spec: JobSpec, classes: tuple[str, ...]) -> tuple[keras.Model, str]:
    """(network, its version): the network of the artifact `spec.init_from` (backbone and head,
    class biases taken out, temperature 1, no OOD branch), for a run that trains it further
    instead of starting from ImageNet weights and a new head: a long recipe split over sessions.

    Raises ValueError unless that model has this run's classes, backbone, input size and
    preprocessing and was validated on the same split (same sources, fractions and split seed):
    otherwise images it was trained on would sit in this run's validation part.
    """
    assert spec.init_from is not None
    model, manifest = load_artifact(spec.init_from)
    mismatches = lineage_mismatches(spec_lineage(spec, classes), lineage(manifest))
    if mismatches:
        raise ValueError(f"cannot continue {manifest.version}: " + "; ".join(mismatches))
    return bare_network(model, manifest), manifest.version


def bare_network(model: keras.Model, manifest: ModelManifest) -> keras.Model:
    """A loaded model's network as fine-tuning left it: pixels -> logits at temperature 1, its
    class biases taken out, no OOD branch (layers shared with `model`)."""
    return with_temperature(without_class_bias(model, manifest.class_bias), 1.0)


#: What a trained network's lineage is: the inputs and classes it answers on and the validation
#: split it was chosen on. Two networks may be continued or averaged one from the other only
#: when theirs are equal: otherwise images one was trained on would sit in the other's validation.
Lineage = dict[str, Any]


def lineage(manifest: ModelManifest) -> Lineage:
    """The lineage a model version's manifest and recipe record."""
    recipe = manifest.recipe
    roots = [Path(p) for p in recipe.get("sources", [])]
    return {"classes": list(manifest.classes), "backbone": manifest.backbone,
            "input size": list(manifest.input_size), "preprocessing": manifest.preprocessing,
            "sources": [source_name(p) for p in roots],
            "validation fractions": per_source(list(recipe.get("validation_fraction", [])), len(roots)),
            "split seed": recorded_split_seed(recipe)}


def spec_lineage(spec: JobSpec, classes: tuple[str, ...]) -> Lineage:
    """The lineage a run of `spec` on data with `classes` gives its network."""
    return {"classes": list(classes), "backbone": spec.backbone, "input size": list(spec.input_size),
            "preprocessing": spec.policy, "sources": [source_name(p) for p in spec.data],
            "validation fractions": per_source(list(spec.validation_fraction), len(spec.data)),
            "split seed": spec.effective_split_seed}


def lineage_mismatches(mine: Lineage, theirs: Lineage) -> list[str]:
    """'what: mine here, theirs there' for each field in which two lineages differ."""
    return [f"{what}: {mine[what]} here, {theirs[what]} there" for what in mine if mine[what] != theirs[what]]


def fit_operating_points(model: keras.Model, sources: list[Source], classes: tuple[str, ...],
                         policy: OperatingPolicy, log: Log) -> tuple[keras.Model, dict[str, Any]]:
    """Class biases (into the logits layer), temperature, referral and uncertainty thresholds, all
    on validation, to `policy`'s targets.

    Returns the calibrated model and {temperature, class_bias, referral, validation: per-source
    metrics with ECE before and after}.
    """
    allowed = admissible(classes)
    raw = _source_scores(model, sources)
    points = operating_points(raw, list(classes), allowed, policy=policy)
    bias, calibration = points.class_bias, points.calibration
    log(f"class bias span {points.span} chosen by 2-fold cross-validation on validation: {points.tried}")
    dense = model.get_layer(LOGITS)
    kernel, old_bias = dense.get_weights()
    dense.set_weights([kernel, old_bias + bias.astype(np.float32)])
    adjusted = [Scored(s.source, s.values + bias, s.labels) for s in raw]
    temperature, probabilities = calibration.temperature, calibration.probabilities
    referral, uncertainty = calibration.referral, calibration.uncertainty
    validation: dict[str, Any] = {}
    for before, after in zip(adjusted, probabilities, strict=True):
        m = classification_metrics(after.values, after.labels, classes)
        m["ece_uncalibrated"] = expected_calibration_error(softmax(before.values), before.labels, allowed)
        validation[before.source] = m
        log(f"validation {before.source}: balanced accuracy {m['balanced_accuracy']:.4f}, "
            f"ECE {m['ece_uncalibrated']:.4f} -> {m['ece']:.4f}")
    log(f"class bias {np.round(bias, 2).tolist()}, temperature {temperature:.3f}, referral "
        + ", ".join(f"{k} >= {v.threshold:.3f}" for k, v in referral.items()))
    return with_temperature(model, temperature), {
        "temperature": temperature, "class_bias": bias.tolist(), "referral": referral,
        "uncertainty": uncertainty,
        "validation": validation}


def fit_detector(model: keras.Model, train: ImageSet, sources: list[Source], log: Log,
                 *, flagged: float) -> tuple[keras.Model, OodDetector]:
    """Fit the out-of-distribution detector on the training embeddings, set its threshold so that
    `flagged` of the pooled validation images score above it, and add it as the "ood" output."""
    fit = fit_ood(predict(embedding_model(model), train.images), train.labels)
    return with_ood_output(model, fit), detector_on_validation(model, fit, sources, log, flagged=flagged)


def detector_on_validation(model: keras.Model, fit: OodFit, sources: list[Source], log: Log,
                           *, flagged: float) -> OodDetector:
    """The detector `fit` on `model`'s embeddings, its threshold set so that `flagged` of the
    pooled validation images score above it, with the share flagged per source."""
    embed = embedding_model(model)
    scores = {s.name: fit.scores(predict(embed, s.validation.images)) for s in sources}
    threshold = threshold_for(np.concatenate(list(scores.values())), flagged=flagged)
    detector = OodDetector(dims=fit.projection.shape[1], threshold=threshold, flagged=flagged,
                           validation_flagged={k: float((v > threshold).mean()) for k, v in scores.items()})
    log(f"ood: threshold {threshold:.3f}, validation flagged {detector.validation_flagged}")
    return detector
