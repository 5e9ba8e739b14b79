"""`python -m trainer_service evaluate ARTIFACT DATA`: what a model artifact does on a labelled,
class-per-folder set (`cli.evaluate_main` parses its options and calls `evaluate`).

`evaluate_on` measures: the classification figures with their bootstrap intervals, the ECE at
temperature 1 and the ECE floor of a set this size, and, given the model's manifest, what its
operating points do on the set (`operating_figures`). `train` measures its `--eval-data` with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np

from shared.manifest import ModelManifest
from shared.taxonomy import admissible, decide
from trainer_service.ml.artifacts import load_artifact
from trainer_service.ml.calibration import expected_calibration_error, softmax
from trainer_service.ml.dataset import ImageSet, data_summary, load_image_set
from trainer_service.ml.evaluation import classification_metrics, format_report, predict
from trainer_service.ml.metric_intervals import bootstrap_intervals, calibrated_ece_floor
from trainer_service.ml.network import logits_model
from trainer_service.ml.proportions import flag_rates, wilson_interval


def evaluate(artifact: Path, data: Path, *, part: str | None = None, json_path: Path | None = None) -> None:
    """Print the metrics of the model at `artifact` on the set at `data` (only its `part` half of
    the lesions when given) and what its operating points do there; with `json_path`, also write
    them there as JSON. Raises what loading the artifact or the set raises."""
    model, manifest = load_artifact(artifact)
    metrics = evaluate_on(model, data, manifest.input_size, tuple(manifest.classes),
                          manifest.preprocessing,
                          manifest, part=part)
    metrics["model_version"] = manifest.version
    if part is not None:
        metrics["part"] = part
    print(f"model {manifest.version} on {data}" + (f" ({part} half)" if part else ""))
    print(format_report(metrics))
    for name, row in metrics.get("operating_points", {}).get("referral", {}).items():
        span = row.get("recall_interval")
        print(f"referral {name} >= {row['threshold']:.3f}: recall {row['recall']}"
              + (f" (95% Wilson interval {span[0]:.3f}-{span[1]:.3f})" if span else "")
              + f", specificity {row['specificity']}")
    for key in ("uncertainty", "ood_flagged"):
        if key in metrics.get("operating_points", {}):
            print(f"{key}: {metrics['operating_points'][key]}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(metrics, indent=2) + "\n")


def evaluate_on(model: keras.Model, root: Path, input_size: tuple[int, int], classes: tuple[str, ...],
                policy: str, manifest: ModelManifest | None = None, *,
                part: str | None = None) -> dict[str, Any]:
    """Metrics of a calibrated `model` on the class-per-folder set at `root`, with ECE at T=1.

    With `part` ('gate' or 'report'), only that half of the set's lesions. With the model's
    `manifest`, also what its operating points do on this set: each referral
    threshold's recall and specificity, the share flagged out of distribution, and the coverage
    and accuracy of the answers not marked uncertain.
    """
    data = load_image_set(root, input_size, classes=classes, policy=policy)
    if part is not None:  # one half of the set by lesion (trainer_service.ml.evidence.reference_part)
        from trainer_service.ml.evidence import reference_part

        data = data.subset(np.flatnonzero([reference_part(g) == part for g in data.groups]))
    probabilities = predict(model, data.images)
    metrics = classification_metrics(probabilities, data.labels, classes)
    metrics["ece_uncalibrated"] = _ece_at_unit_temperature(model, data)
    metrics["ece_calibrated_floor"] = calibrated_ece_floor(probabilities, admissible(classes))
    metrics["intervals"] = bootstrap_intervals(probabilities, data.labels, classes)
    metrics["data"] = data_summary(data)
    if manifest is not None:
        metrics["operating_points"] = operating_figures(model, manifest, data, probabilities)
    return metrics


def operating_figures(model: keras.Model, manifest: ModelManifest, data: ImageSet,
                      probabilities: np.ndarray) -> dict[str, Any]:
    """Referral recall/specificity, OOD flagged share and uncertain coverage on `data`."""
    allowed = admissible(data.classes)
    out: dict[str, Any] = {"referral": {}}
    top = decide(probabilities, allowed)
    for name, point in manifest.referral.items():
        c = data.classes.index(name)
        flagged = probabilities @ allowed[c] >= point.threshold
        positive = data.labels == c
        hits = int(flagged[positive].sum())
        caught = flagged | allowed[c, top].astype(bool)  # what a clinician gets: named or flagged
        recall, specificity = flag_rates(flagged, positive)
        out["referral"][name] = {
            "threshold": point.threshold,
            "recall": recall,
            "recall_interval": wilson_interval(hits, int(positive.sum())),
            "specificity": specificity,
            "caught": flag_rates(caught, positive)[0],
            "positives": int(positive.sum())}
    if manifest.uncertainty is not None:
        top = decide(probabilities, allowed)
        answered = (probabilities @ allowed.T)[np.arange(len(top)), top] >= manifest.uncertainty.threshold
        correct = allowed[data.labels, top]
        out["uncertainty"] = {"threshold": manifest.uncertainty.threshold, "coverage": float(answered.mean()),
                              "accuracy_answered": float(correct[answered].mean())
                                                   if answered.any() else None,
                              "accuracy_all": float(correct.mean())}
    if manifest.ood is not None and isinstance(model.output, (list, tuple)):
        scores = predict(model, data.images, output=1).reshape(-1)
        out["ood_flagged"] = float((scores > manifest.ood.threshold).mean())
    return out


def _ece_at_unit_temperature(model: keras.Model, data: ImageSet) -> float:
    logits = predict(logits_model(model), data.images)
    return expected_calibration_error(softmax(logits), data.labels, admissible(data.classes))
