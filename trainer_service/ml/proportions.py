"""Proportions and how sure they are, each written once: a class's recall, balanced accuracy (the
mean recall over the classes present), a flag's recall and specificity, the Wilson score interval
of a proportion, and the percentile interval of a statistic's bootstrap resamples.

Whatever counts as a right answer (the argmax, the API's answer under the class hierarchy, a
malignant class named or flagged) the caller decides and passes as `correct`, one 0/1 or bool per
image; these functions only count. Evaluation's metrics and bootstrap intervals, the gate's
verdicts, the referral thresholds' bounds and epoch selection all call them. numpy and the
standard library only: importing this loads no TensorFlow or scipy.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

#: The level of an interval when the caller does not say.
LEVEL = 0.95


def class_recalls(correct: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """For each label present in `labels` (ascending), the share of its images whose answer is
    `correct` (one entry per image, aligned with `labels`). A label with no image has no entry."""
    right = np.asarray(correct, np.float64)
    return {int(c): float(right[labels == c].mean()) for c in np.unique(labels)}


def balanced_accuracy(correct: np.ndarray, labels: np.ndarray) -> float:
    """The mean of `class_recalls`: each class present counts once, whatever its number of images.
    Raises ValueError when `labels` is empty (there is nothing to be accurate on)."""
    recalls = class_recalls(correct, labels)
    if not recalls:
        raise ValueError("balanced accuracy of no images")
    return float(np.mean(list(recalls.values())))


def flag_rates(flagged: np.ndarray, positive: np.ndarray) -> tuple[float | None, float | None]:
    """Of a flag (one 0/1 or bool per image: referred, named or flagged) against the images that
    should get it (`positive`, aligned): its recall (the share of positive images flagged) and its
    specificity (the share of the other images not flagged), each None when there is no image to
    take it over."""
    flags, wanted = np.asarray(flagged, bool), np.asarray(positive, bool)
    recall = float(flags[wanted].mean()) if wanted.any() else None
    specificity = float((~flags[~wanted]).mean()) if (~wanted).any() else None
    return recall, specificity


def wilson_interval(hits: int, n: int, level: float = LEVEL) -> tuple[float, float] | None:
    """The two-sided Wilson score interval of the proportion `hits / n` at `level` (0 <= level < 1;
    0: the proportion itself), or None when n is 0."""
    if n == 0:
        return None
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_lower_bound(hits: int, n: int, confidence: float) -> float:
    """The one-sided Wilson lower bound of `hits / n` at `confidence` (0.5 <= confidence < 1): the
    lower end of the two-sided interval at level 2 * confidence - 1; at 0.5 the proportion
    itself; 0.0 when n is 0. Of 90 melanomas, 78 found is a recall of 0.867 but a 95 % bound of
    0.797, 79 found a bound of 0.810."""
    interval = wilson_interval(hits, n, 2.0 * confidence - 1.0)
    return 0.0 if interval is None else interval[0]


def percentile_interval(samples: np.ndarray | list[float], level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of a statistic's bootstrap resamples: the bounds of the central
    `level` share of `samples` (0 <= level < 1; numpy's linear interpolation between order
    statistics). Raises ValueError when there are no samples."""
    values = np.asarray(samples, np.float64)
    if values.size == 0:
        raise ValueError("percentile interval of no samples")
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)
