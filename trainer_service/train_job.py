"""One training job end to end: data -> split -> head -> fine-tune -> temperature -> manifest."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras

from shared.manifest import ModelManifest
from trainer_service.artifacts import code_version
from trainer_service.backbones import build_backbone
from trainer_service.calibration import expected_calibration_error, fit_temperature, softmax
from trainer_service.classifier import build_classifier, logits_model, with_temperature
from trainer_service.dataset import ImageSet, data_summary, grouped_split, load_image_set
from trainer_service.evaluation import classification_metrics, predict
from trainer_service.training import Log, Recipe, fine_tune, held_out_logits, train_head


@dataclass(frozen=True)
class JobSpec:
    """What to train: data, backbone, input size, recipe, held-out share, optional eval set."""

    data: Path
    backbone: str = "efficientnet_lite0"
    input_size: tuple[int, int] = (160, 160)
    recipe: Recipe = field(default_factory=Recipe)
    validation_fraction: float = 0.1
    eval_data: Path | None = None
    pretrained: bool = True


def run_job(spec: JobSpec, version: str, log: Log, *, parent_version: str | None = None) -> tuple[keras.Model, ModelManifest]:
    """Train, calibrate on the held-out split of `spec.data`, and describe the result.

    Returns the calibrated model (probabilities out) and its manifest; metrics hold validation
    figures (ECE before/after temperature scaling) and, with `spec.eval_data`, the same on that
    set. The temperature is never fitted on `spec.eval_data`. Raises FileNotFoundError for a
    missing dataset.
    """
    started = time.monotonic()
    keras.utils.set_random_seed(spec.recipe.seed)
    data = load_image_set(spec.data, spec.input_size)
    train_index, held_index = grouped_split(data, spec.validation_fraction, spec.recipe.seed)
    train, held_out = data.subset(train_index), data.subset(held_index)
    log(f"data: {len(data.files)} images, {len(train.files)} train / {len(held_out.files)} held out; {data.counts()}")

    backbone = build_backbone(spec.backbone, spec.input_size, pretrained=spec.pretrained)
    model = build_classifier(backbone, len(data.classes))
    train_head(model, train, spec.recipe, log)
    history = fine_tune(model, train, held_out, spec.recipe, log)

    logits = held_out_logits(model, held_out)
    temperature = fit_temperature(logits, held_out.labels)
    calibrated = with_temperature(model, temperature)
    validation = classification_metrics(softmax(logits, temperature), held_out.labels, data.classes)
    validation["ece_uncalibrated"] = expected_calibration_error(softmax(logits), held_out.labels)
    log(f"temperature {temperature:.3f}: val ECE {validation['ece_uncalibrated']:.4f} -> {validation['ece']:.4f}")
    metrics: dict[str, Any] = {"validation": validation}
    if spec.eval_data is not None:
        metrics["eval"] = evaluate_on(calibrated, spec.eval_data, spec.input_size, data.classes)
        log(f"eval: balanced accuracy {metrics['eval']['balanced_accuracy']:.4f}")

    manifest = ModelManifest(
        version=version,
        classes=list(data.classes),
        input_size=spec.input_size,
        backbone=spec.backbone,
        temperature=temperature,
        parent_version=parent_version,
        code_version=code_version(),
        training_data={
            "source": str(spec.data),
            **data_summary(data),
            "train": data_summary(train),
            "held_out": data_summary(held_out),
        },
        metrics=metrics,
        recipe={**asdict(spec.recipe), "validation_fraction": spec.validation_fraction, "pretrained": spec.pretrained},
        history=history,
        training_seconds=round(time.monotonic() - started, 1),
    )
    return calibrated, manifest


def evaluate_on(model: keras.Model, root: Path, input_size: tuple[int, int], classes: tuple[str, ...]) -> dict[str, Any]:
    """Metrics of a calibrated `model` on the class-per-folder set at `root`, with ECE at T=1."""
    data = load_image_set(root, input_size, classes=classes)
    metrics = classification_metrics(predict(model, data.images), data.labels, classes)
    metrics["ece_uncalibrated"] = _ece_at_unit_temperature(model, data)
    metrics["data"] = data_summary(data)
    return metrics


def _ece_at_unit_temperature(model: keras.Model, data: ImageSet) -> float:
    logits = predict(logits_model(model), data.images)
    return expected_calibration_error(softmax(logits), data.labels)

