"""Classifier metrics on a labelled set: the figures `evaluate` prints and manifests record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import confusion_matrix, roc_auc_score

from shared.taxonomy import admissible, decide
from trainer_service.ml.calibration import expected_calibration_error
from trainer_service.ml.proportions import balanced_accuracy, class_recalls


def compiled_forward(model: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """A traced-once `tf.function` calling `model` in inference mode on any batch size."""
    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
    forward: Callable[[tf.Tensor], tf.Tensor] = tf.function(lambda x: model(x, training=False),
                                                            input_signature=[spec])
    return forward


def predict(model: keras.Model, images: np.ndarray, *, batch_size: int = 64, output: int = 0) -> np.ndarray:
    """The model's outputs for uint8 or float images (n, h, w, 3), as a float64 array; of a model
    with several outputs (probabilities and "ood"), the one at index `output`."""
    forward = compiled_forward(model)

    def run(batch: np.ndarray) -> np.ndarray:
        out = forward(tf.constant(batch, tf.float32))
        return np.asarray(out[output] if isinstance(out, (list, tuple)) else out)

    outputs = [run(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return np.concatenate(outputs).astype(np.float64)


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray,
                           classes: tuple[str, ...]) -> dict[str, Any]:
    """Balanced accuracy, accuracy, per-class recall/precision/support/AUC, confusion matrix
    (rows = true class, columns = predicted), macro one-vs-rest AUC and top-label ECE.

    The class hierarchy (`shared.taxonomy.covers`) is honoured: a label admits its descendants,
    so a seborrheic keratosis predicted for a HAM10000 benign keratosis is right; a prediction
    is counted in the column of its nearest ancestor-or-self among the labels present, and a
    class's AUC ranks its rolled-up probability (its own plus its descendants'). Classes without
    examples are left out of balanced accuracy and AUC (their recall is None); AUC is None when
    fewer than two classes are present.
    """
    k = len(classes)
    allowed = admissible(classes)
    present = np.bincount(labels, minlength=k) > 0
    predicted = scored_answers(probabilities, labels, allowed)
    matrix = confusion_matrix(labels, predicted, labels=list(range(k)))
    support = matrix.sum(axis=1)
    predicted_counts = matrix.sum(axis=0)
    recall = class_recalls(predicted == labels, labels)
    precision = np.where(predicted_counts > 0, np.diag(matrix) / np.maximum(predicted_counts, 1), np.nan)
    rolled = probabilities @ allowed.T
    aucs = {int(c): _auc(labels == c, rolled[:, c]) for c in np.flatnonzero(present)}
    per_class = {
        name: {
            "recall": recall.get(i),
            "precision": None if np.isnan(precision[i]) else float(precision[i]),
            "support": int(support[i]),
            "auc": aucs.get(i),
        }
        for i, name in enumerate(classes)
    }
    valid = [a for a in aucs.values() if a is not None]
    return {
        "images": len(labels),
        "balanced_accuracy": balanced_accuracy(predicted == labels, labels),
        "accuracy": float((predicted == labels).mean()),
        "macro_auc_ovr": float(np.mean(valid)) if len(valid) >= 2 else None,
        "ece": expected_calibration_error(probabilities, labels, allowed),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "classes": list(classes),
    }


def scored_answers(probabilities: np.ndarray, labels: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The label each answer is scored as: the API's answer (`decide`), moved to its nearest
    ancestor among the labels present in the set when it is not present itself."""
    present = np.bincount(labels, minlength=allowed.shape[0]) > 0
    return _nearest_present(decide(probabilities, allowed), allowed, present)


def _nearest_present(predicted: np.ndarray, allowed: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Each predicted output as the most specific present label that admits it (else itself)."""
    out = predicted.copy()
    for j in np.unique(predicted):
        owners = [i for i in np.flatnonzero(present & (allowed[:, j] > 0))]
        if owners and not present[j]:
            out[predicted == j] = min(owners, key=lambda i: allowed[i].sum())
    return out


def _auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """One-vs-rest ROC AUC, or None when only one side is present."""
    return float(roc_auc_score(positive, scores)) if 0 < positive.sum() < len(positive) else None


def _span(interval: list[float] | None) -> str:
    return "-" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def format_report(metrics: dict[str, Any]) -> str:
    """A human-readable table of `classification_metrics` output."""
    classes = metrics["classes"]
    auc = metrics["macro_auc_ovr"]
    lines = [
        f"images: {metrics['images']}",
        f"balanced accuracy: {metrics['balanced_accuracy']:.4f}   accuracy: {metrics['accuracy']:.4f}",
        f"macro AUC (one-vs-rest): {'n/a' if auc is None else f'{auc:.4f}'}   ECE: {metrics['ece']:.4f}",
    ]
    if "ece_uncalibrated" in metrics:
        lines.append(f"ECE at temperature 1: {metrics['ece_uncalibrated']:.4f}")
    if "ece_calibrated_floor" in metrics:
        floor = metrics["ece_calibrated_floor"]
        lines.append(f"ECE a perfectly calibrated model would show on this set: median "
                     f"{floor['median']:.4f}, 90th percentile {floor['p90']:.4f}")
    if "intervals" in metrics:
        ci = metrics["intervals"]
        lines.append(f"{ci['level']:.0%} bootstrap intervals ({ci['resamples']} resamples): "
                     f"balanced accuracy {_span(ci['balanced_accuracy'])}")
    lines += ["", f"{'class':<22} {'recall':>7} {'precision':>9} {'auc':>7} {'support':>7}"]
    for name in classes:
        row = metrics["per_class"][name]
        rec = "-" if row["recall"] is None else f"{row['recall']:.3f}"
        pre = "-" if row["precision"] is None else f"{row['precision']:.3f}"
        auc = "-" if row.get("auc") is None else f"{row['auc']:.3f}"
        span = metrics.get("intervals", {}).get("auc", {}).get(name)
        lines.append(f"{name:<22} {rec:>7} {pre:>9} {auc:>7} {row['support']:>7}"
                     + (f"   AUC {_span(span)}" if span else ""))
    short = [name[:6] for name in classes]
    lines += ["", "confusion matrix (rows true, columns predicted):",
              " " * 8 + " ".join(f"{s:>6}" for s in short)]
    for name, row in zip(short, metrics["confusion_matrix"], strict=True):
        lines.append(f"{name:>7} " + " ".join(f"{v:>6}" for v in row))
    return "\n".join(lines)
