"""Operating points chosen on validation: class biases for balanced accuracy, referral thresholds.

Both are fitted on held-out validation images of every source, never on an evaluation split.
The class biases are added to the logits layer's bias (the model stays plain Keras); referral
thresholds are compared with the calibrated, rolled-up probability of a malignant class and
travel in the manifest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from shared.manifest import ReferralThreshold, Uncertainty
from shared.taxonomy import decide
from trainer_service.ml.calibration import softmax
from trainer_service.ml.proportions import class_recalls, flag_rates, wilson_lower_bound


@dataclass(frozen=True)
class Scored:
    """One source's held-out outputs: logits (or probabilities) and labels, with its name."""

    source: str
    values: np.ndarray
    labels: np.ndarray


def stratum_recalls(logits: np.ndarray, labels: np.ndarray, allowed: np.ndarray) -> list[float]:
    """Recall of each label present (the share of its images whose answer the label admits)."""
    return list(class_recalls(allowed[labels, decide(softmax(logits), allowed)], labels).values())


def mean_stratum_recall(sets: list[Scored], allowed: np.ndarray, bias: np.ndarray) -> float:
    """Mean recall over every (source, class) pair present: each class counts once wherever it is
    measured, so a source with three classes does not outweigh one with seven (a mean of the
    sources' balanced accuracies gives each of ISIC's three classes 2.3 times a HAM class's say,
    which traded HAM's benign keratoses away for ISIC's nevi)."""
    return float(np.mean([r for s in sets for r in stratum_recalls(s.values + bias, s.labels, allowed)]))


def fit_class_bias(sets: list[Scored], allowed: np.ndarray, *, span: float = 3.0, step: float = 0.1,
                   passes: int = 3) -> np.ndarray:
    """Per-class logit offsets maximising the mean recall over (source, class) pairs
    (`mean_stratum_recall`).

    Coordinate ascent on a grid of [-span, span]; a change is kept only when it raises the
    objective (ties keep the smaller offset), so with nothing to gain the offsets stay 0.
    """
    k = allowed.shape[0]
    bias = np.zeros(k)
    grid = np.round(np.arange(-span, span + step / 2, step), 6)

    def objective(b: np.ndarray) -> float:
        return mean_stratum_recall(sets, allowed, b)

    best = objective(bias)
    for _ in range(passes):
        changed = False
        for c in range(k):
            for value in sorted(grid, key=abs):
                trial = bias.copy()
                trial[c] = value
                score = objective(trial)
                if score > best + 1e-9:
                    best, bias, changed = score, trial, True
        if not changed:
            break
    return bias


def cross_validated_bias(sets: list[Scored], allowed: np.ndarray, *,
                         spans: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 3.0),
                         seed: int = 0) -> tuple[np.ndarray, float, dict[float, float]]:
    """`fit_class_bias` with its span chosen by 2-fold cross-validation on the validation sets
    themselves (each source split in halves per class): a bias fitted on one half is scored on the
    other, so offsets that only fit the noise of a few images (9 dermatofibromas) lose. Returns
    (bias fitted on everything with the chosen span, the span, mean held-out score per span)."""
    rng = np.random.default_rng(seed)
    folds = []
    for s in sets:
        half = np.zeros(len(s.labels), bool)
        for c in np.unique(s.labels):
            members = rng.permutation(np.flatnonzero(s.labels == c))
            half[members[: len(members) // 2]] = True
        folds.append(half)

    def part(mask_of: list[np.ndarray]) -> list[Scored]:
        return [Scored(s.source, s.values[m], s.labels[m]) for s, m in zip(sets, mask_of, strict=True)]

    def score(b: np.ndarray, chosen: list[Scored]) -> float:
        return mean_stratum_recall(chosen, allowed, b)

    results: dict[float, float] = {}
    for span in spans:
        held = []
        for first in (True, False):
            fit_on = part([f if first else ~f for f in folds])
            test_on = part([~f if first else f for f in folds])
            bias = fit_class_bias(fit_on, allowed, span=span) if span > 0 else np.zeros(allowed.shape[0])
            held.append(score(bias, test_on))
        results[span] = float(np.mean(held))
    best = max(spans, key=lambda sp: (round(results[sp], 6), -sp))
    bias = fit_class_bias(sets, allowed, span=best) if best > 0 else np.zeros(allowed.shape[0])
    return bias, best, results


def _flagged_needed(n: int, target_recall: float, confidence: float) -> int:
    """The fewest of `n` positives to flag for the recall bound to reach the target (all if none does)."""
    return next((k for k in range(max(1, math.ceil(target_recall * n)), n + 1)
                 if wilson_lower_bound(k, n, confidence) >= target_recall), n)


def referral_thresholds(sets: list[Scored], classes: list[str], referral: tuple[str, ...],
                        allowed: np.ndarray, *, target_recall: float, confidence: float = 0.5,
                        min_positives: int = 10) -> dict[str, ReferralThreshold]:
    """For each class of `referral` the model predicts, the highest probability threshold at which
    every source with at least `min_positives` held-out cases reaches `target_recall` with
    one-sided `confidence` (the Wilson lower bound of its validation recall; 0.5: the recall
    itself). A few dozen cases leave a wide interval, so the bound asks for more than the target:
    the margin shrinks as validation grows.

    `sets` hold calibrated probabilities. The recall and specificity each source gets at the
    threshold are recorded with it. Classes with too few cases anywhere are left out.
    """
    out: dict[str, ReferralThreshold] = {}
    for name in referral:
        if name not in classes:
            continue
        c = classes.index(name)
        per_source: dict[str, np.ndarray] = {}
        candidates: list[float] = []
        for s in sets:
            rolled = s.values @ allowed[c]
            positives = np.sort(rolled[s.labels == c])[::-1]
            if len(positives) >= min_positives:
                candidates.append(float(positives[_flagged_needed(len(positives), target_recall,
                                                                  confidence) - 1]))
            per_source[s.source] = rolled
        if not candidates:
            continue
        threshold = min(candidates)
        recall, specificity = {}, {}
        for s in sets:
            found, kept = flag_rates(per_source[s.source] >= threshold, s.labels == c)
            if found is not None:
                recall[s.source] = found
            if kept is not None:
                specificity[s.source] = kept
        out[name] = ReferralThreshold(threshold=threshold, target_recall=target_recall, confidence=confidence,
                                      validation_recall=recall, validation_specificity=specificity)
    return out


def uncertainty_threshold(sets: list[Scored], allowed: np.ndarray, *, target_accuracy: float) -> Uncertainty:
    """The lowest confidence threshold at which the answered share of the pooled validation sets
    (calibrated probabilities) reaches `target_accuracy`; the trade-off at other thresholds is
    recorded. A model that never reaches it answers "uncertain" below 1.0 (almost always)."""
    probabilities = np.concatenate([s.values for s in sets])
    labels = np.concatenate([s.labels for s in sets])
    top = decide(probabilities, allowed)
    confidence = (probabilities @ allowed.T)[np.arange(len(top)), top]
    correct = allowed[labels, top]

    def at(t: float) -> tuple[float, float]:
        answered = confidence >= t
        return float(answered.mean()), float(correct[answered].mean()) if answered.any() else 1.0

    grid = np.round(np.arange(0.0, 1.0, 0.01), 2)
    chosen = next((float(t) for t in grid if at(t)[1] >= target_accuracy), 1.0)
    coverage, accuracy = at(chosen)
    trade = [{"threshold": float(t), "coverage": at(t)[0], "accuracy": at(t)[1]} for t in np.arange(0.0, 1.0,
                                                                                                    0.1)]
    return Uncertainty(threshold=chosen, target_accuracy=target_accuracy, validation_coverage=coverage,
                       validation_accuracy=accuracy, trade_off=trade)


def calibrated(sets: list[Scored], temperature: float) -> list[Scored]:
    """The same sets with logits turned into probabilities at `temperature`."""
    return [Scored(s.source, softmax(s.values, temperature), s.labels) for s in sets]
