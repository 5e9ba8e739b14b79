"""The promotion gate: a candidate is served only if it is not worse than the current model on
the same held-out images, beyond the noise of those images.

Both models' answers on the same images are compared with a paired, class-stratified bootstrap:
a drop counts only when it is larger than its margin *and* its interval lies below zero. A
class with fewer held-out images than the policy's minimum is "not enough data to judge". A
malignant class may not fall at all (by default); a benign class's drop is accepted when a
malignant class's recall rose beyond its noise and the policy allows that trade.
"""

from __future__ import annotations

import numpy as np

from shared.verdict import ClassVerdict, GatePolicy, GateResult, Interval, Judgement


def _interval(samples: np.ndarray, observed: float, confidence: float) -> Interval:
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return Interval(difference=round(observed, 4), low=round(float(low), 4), high=round(float(high), 4))


def _judge(change: Interval, margin: float) -> Judgement:
    if change.difference < -margin and change.high < 0:
        return "worse"
    if change.difference > 0 and change.low > 0:
        return "better"
    return "within noise"


def apply_gate(labels: np.ndarray, candidate_correct: np.ndarray, current_correct: np.ndarray | None,
               classes: list[str], policy: GatePolicy, *, seed: int = 0) -> GateResult:
    """Judge a candidate against the current model from each model's right/wrong (0/1) on the same
    held-out images (`labels` index `classes`). With no current model (None) it passes."""
    present = [c for c in range(len(classes)) if (labels == c).any()]
    new = {c: float(candidate_correct[labels == c].mean()) for c in present}
    new_bacc = float(np.mean(list(new.values()))) if new else 0.0
    if current_correct is None:
        return GateResult(passed=True, reasons=["no current model to compare with"],
                          candidate_balanced_accuracy=new_bacc, current_balanced_accuracy=None, policy=policy)
    rng = np.random.default_rng(seed)
    old = {c: float(current_correct[labels == c].mean()) for c in present}
    diffs: dict[int, np.ndarray] = {}
    for c in present:
        delta = (candidate_correct - current_correct)[labels == c].astype(np.float64)
        picks = rng.integers(0, len(delta), (policy.resamples, len(delta)))
        diffs[c] = delta[picks].mean(axis=1)
    bacc_change = _interval(np.mean([diffs[c] for c in present], axis=0),
                            new_bacc - float(np.mean(list(old.values()))), policy.confidence)
    verdicts = []
    for c in present:
        name, support = classes[c], int((labels == c).sum())
        malignant = name in policy.malignant
        change = _interval(diffs[c], new[c] - old[c], policy.confidence)
        margin = policy.malignant_max_recall_drop if malignant else policy.max_class_recall_drop
        judgement = "not enough data" if support < policy.min_class_support else _judge(change, margin)
        verdicts.append(ClassVerdict(label=name, support=support, malignant=malignant, current_recall=old[c],
                                     candidate_recall=new[c], change=change, judgement=judgement))
    reasons: list[str] = []
    if _judge(bacc_change, policy.max_balanced_accuracy_drop) == "worse":
        reasons.append(f"balanced accuracy fell {-bacc_change.difference:.3f} "
                       f"(95% interval {bacc_change.low:+.3f} to {bacc_change.high:+.3f}), beyond its noise")
    gains = [v for v in verdicts if v.malignant and v.judgement == "better"]
    for v in verdicts:
        if v.judgement != "worse":
            continue
        assert v.change is not None
        words = (f"recall of {v.label} fell from {v.current_recall:.3f} to {v.candidate_recall:.3f} "
                 f"(interval {v.change.low:+.3f} to {v.change.high:+.3f}, {v.support} images)")
        if not v.malignant and gains and policy.accept_benign_for_malignant:
            continue
        reasons.append(words + (" — a malignant class may not fall" if v.malignant else ""))
    accepted = []
    if not reasons:
        for v in verdicts:
            if v.judgement == "worse" and v.change is not None:
                for_gains = ", ".join(f"{g.label} {g.change.difference:+.3f}" for g in gains if g.change)
                accepted.append(f"accepted the trade: {v.label} recall {v.change.difference:+.3f} "
                                f"for {for_gains}")
        thin = [v.label for v in verdicts if v.judgement == "not enough data"]
        if thin:
            accepted.append(f"not enough held-out images to judge {', '.join(thin)} "
                            f"(fewer than {policy.min_class_support} each)")
        accepted.append("not worse than the current model beyond the noise of the held-out images")
    return GateResult(passed=not reasons, reasons=reasons or accepted,
                      candidate_balanced_accuracy=round(new_bacc, 4),
                      current_balanced_accuracy=round(float(np.mean(list(old.values()))), 4),
                      balanced_accuracy_change=bacc_change, classes=verdicts, policy=policy)
