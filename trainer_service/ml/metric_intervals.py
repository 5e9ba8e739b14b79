"""How sure an evaluation figure is: bootstrap intervals, and the ECE that a perfectly calibrated
model would still show on a set of this size (a recall's Wilson interval and the percentile
interval itself are in `trainer_service.ml.proportions`).

A held-out set of 149 images (ISIC 2017 `val/`) gives a melanoma AUC, a balanced accuracy and an
ECE that move by several points from one resample to the next; `evaluate` reports these beside
the figures so that a target is read against the noise of the set that measures it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from shared.taxonomy import admissible
from trainer_service.ml.calibration import expected_calibration_error
from trainer_service.ml.evaluation import scored_answers
from trainer_service.ml.proportions import LEVEL, balanced_accuracy, percentile_interval

RESAMPLES = 1000
DRAWS = 200


def calibrated_ece_floor(probabilities: np.ndarray, allowed: np.ndarray, *, draws: int = DRAWS,
                         bins: int = 15, seed: int = 0) -> dict[str, float]:
    """The ECE a perfectly calibrated model with these predictions would show on a set this size.

    Labels are drawn from the model's own probabilities (so the model is calibrated by
    construction) `draws` times; returns the median and 90th percentile of the ECE they give. A
    measured ECE near the median is as good as this set can tell.
    """
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(probabilities / probabilities.sum(axis=1, keepdims=True), axis=1)
    values = []
    for _ in range(draws):
        u = rng.random((len(probabilities), 1))
        labels = np.minimum((u > cumulative).sum(axis=1), probabilities.shape[1] - 1)
        values.append(expected_calibration_error(probabilities, labels, allowed, bins=bins))
    return {"median": float(np.median(values)), "p90": float(np.percentile(values, 90))}


def bootstrap_intervals(probabilities: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], *,
                        resamples: int = RESAMPLES, level: float = LEVEL,
                        seed: int = 0) -> dict[str, Any]:
    """Percentile bootstrap intervals (images resampled with replacement) of balanced accuracy
    and each present class's one-vs-rest AUC, scored as `classification_metrics` scores them
    (hierarchy honoured). A class absent from a resample leaves that resample out of its AUC.

    ECE gets no bootstrap interval: resampling duplicates images, which inflates a binned ECE
    (the interval may miss the figure itself); `calibrated_ece_floor` is its yardstick instead."""
    allowed = admissible(classes)
    rng = np.random.default_rng(seed)
    k = len(classes)
    present = np.flatnonzero(np.bincount(labels, minlength=k) > 0)
    correct = scored_answers(probabilities, labels, allowed) == labels
    rolled = probabilities @ allowed.T
    accuracy = []
    aucs: dict[int, list[float]] = {int(c): [] for c in present}
    for _ in range(resamples):
        idx = rng.integers(0, len(labels), len(labels))
        y, hit = labels[idx], correct[idx]
        accuracy.append(balanced_accuracy(hit, y))
        for c in present:
            positive = y == c
            if 0 < positive.sum() < len(y):
                aucs[int(c)].append(float(roc_auc_score(positive, rolled[idx, c])))

    def interval(values: list[float]) -> list[float] | None:
        return list(percentile_interval(values, level)) if values else None

    return {"level": level, "resamples": resamples,
            "balanced_accuracy": interval(accuracy),
            "auc": {classes[c]: interval(v) for c, v in aucs.items()}}
