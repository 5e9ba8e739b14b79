"""The promotion gate: a candidate is served only if it is not worse than the current model on
the same held-out images, beyond the noise of those images, and only if there were images enough
to tell.

Both models' answers on the same images are compared with a paired, class-stratified bootstrap:
a drop counts only when it is larger than its margin *and* its interval lies below zero. Every
class is judged on its top-label recall; a malignant class also on what a clinician gets from it,
the answer naming it *or* flagging it for referral ("caught"), with what the flag costs the other
images reported beside it. A class with fewer held-out images than the policy's minimum is "not
enough data"; for a malignant class that is not a pass: when no set can judge it, the candidate
is not promoted automatically (`GateResult.unjudged`). A benign class's drop is accepted when a
malignant class's recall rose beyond its noise and the policy allows that trade.

Each held-out set (the lineage's reference images, the catalog's held-out uploads) is judged and
reported apart (`judge_set`); `combine` makes the verdict of them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shared.verdict import ClassVerdict, GatePolicy, GateResult, GateSet, Interval, Judgement
from trainer_service.ml.proportions import (
    balanced_accuracy,
    class_recalls,
    flag_rates,
    percentile_interval,
    wilson_interval,
)


@dataclass(frozen=True)
class Answers:
    """One model's answers on a held-out set: for each image whether its top label is right, and
    for each malignant class whether the answer names it or flags it for referral."""

    correct: np.ndarray
    caught: dict[str, np.ndarray] = field(default_factory=dict)


def _interval(samples: np.ndarray, observed: float, confidence: float) -> Interval:
    low, high = percentile_interval(samples, confidence)
    return Interval(difference=round(observed, 4), low=round(low, 4), high=round(high, 4))


def _judge(change: Interval, margin: float) -> Judgement:
    if change.difference < -margin and change.high < 0:
        return "worse"
    if change.difference > 0 and change.low > 0:
        return "better"
    return "within noise"


def _paired(rng: np.random.Generator, candidate: np.ndarray, current: np.ndarray,
            resamples: int) -> np.ndarray:
    delta = (candidate.astype(np.float64) - current.astype(np.float64))
    means: np.ndarray = delta[rng.integers(0, len(delta), (resamples, len(delta)))].mean(axis=1)
    return means


def _malignant_figures(label: str, c: int, labels: np.ndarray, candidate: Answers, current: Answers,
                       rng: np.random.Generator, policy: GatePolicy) -> dict[str, object]:
    """Caught shares, their paired change, and the flag's specificity, for one malignant class."""
    if label not in candidate.caught or label not in current.caught:
        return {}
    positive = labels == c
    new, old = candidate.caught[label], current.caught[label]
    new_caught, new_specificity = flag_rates(new, positive)
    old_caught, old_specificity = flag_rates(old, positive)
    assert new_caught is not None and old_caught is not None  # judged only for a class present
    return {
        "current_caught": round(old_caught, 4),
        "candidate_caught": round(new_caught, 4),
        "caught_change": _interval(_paired(rng, new[positive], old[positive], policy.resamples),
                                   new_caught - old_caught, policy.confidence),
        "current_specificity": _rounded(old_specificity),
        "candidate_specificity": _rounded(new_specificity)}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def judge_set(name: str, description: str, labels: np.ndarray, candidate: Answers, current: Answers,
              classes: list[str], policy: GatePolicy, *, sources: np.ndarray | None = None,
              seed: int = 0) -> GateSet:
    """Judge a candidate against the current model on one held-out set (`labels` index `classes`;
    `sources` names each image's source). Its `reasons` say what rejects; trades a malignant gain
    pays for are left to `combine`."""
    rng = np.random.default_rng(seed)
    origin = np.asarray(sources) if sources is not None else np.full(len(labels), name)
    new, old = class_recalls(candidate.correct, labels), class_recalls(current.correct, labels)
    present = list(new)
    diffs = {c: _paired(rng, candidate.correct[labels == c], current.correct[labels == c], policy.resamples)
             for c in present}
    new_bacc = balanced_accuracy(candidate.correct, labels) if present else 0.0
    old_bacc = balanced_accuracy(current.correct, labels) if present else 0.0
    bacc_change = _interval(np.mean([diffs[c] for c in present], axis=0), new_bacc - old_bacc,
                            policy.confidence) if present else None
    verdicts: list[ClassVerdict] = []
    for c in present:
        label, support = classes[c], int((labels == c).sum())
        malignant = label in policy.malignant
        change = _interval(diffs[c], new[c] - old[c], policy.confidence)
        margin = policy.malignant_max_recall_drop if malignant else policy.max_class_recall_drop
        extra = _malignant_figures(label, c, labels, candidate, current, rng, policy) if malignant else {}
        judgement: Judgement = _judge(change, margin)
        caught = extra.get("caught_change")
        if isinstance(caught, Interval) and _judge(caught, margin) == "worse":
            judgement = "worse"
        if support < policy.min_class_support:
            judgement = "not enough data"
        verdicts.append(ClassVerdict(
            label=label, support=support, malignant=malignant,
            sources={str(s): int(n) for s, n in zip(*np.unique(origin[labels == c], return_counts=True),
                                                    strict=True)},
            current_recall=round(old[c], 4), candidate_recall=round(new[c], 4), change=change,
            judgement=judgement, **extra))
    reasons: list[str] = []
    if bacc_change is not None and _judge(bacc_change, policy.max_balanced_accuracy_drop) == "worse":
        reasons.append(f"{name}: balanced accuracy fell {-bacc_change.difference:.3f} "
                       f"(95% interval {bacc_change.low:+.3f} to {bacc_change.high:+.3f}), beyond its noise")
    gains = [v for v in verdicts if v.malignant and v.judgement == "better"]
    for v in verdicts:
        if v.judgement != "worse" or (not v.malignant and gains and policy.accept_benign_for_malignant):
            continue
        reasons.append(f"{name}: " + _fall_words(v))
    return GateSet(name=name, description=description, images=len(labels),
                   sources={str(s): int(n)
                            for s, n in zip(*np.unique(origin, return_counts=True), strict=True)},
                   reasons=reasons, candidate_balanced_accuracy=round(new_bacc, 4),
                   current_balanced_accuracy=round(old_bacc, 4), balanced_accuracy_change=bacc_change,
                   classes=verdicts)


def _fall_words(v: ClassVerdict) -> str:
    assert v.change is not None
    words = []
    if v.change.high < 0:
        words.append(f"recall of {v.label} fell from {v.current_recall:.3f} to {v.candidate_recall:.3f} "
                     f"(interval {v.change.low:+.3f} to {v.change.high:+.3f}, {v.support} images)")
    if v.caught_change is not None and v.caught_change.high < 0 and v.caught_change.difference < 0:
        words.append(f"{v.label} caught (named or flagged for referral) fell from {v.current_caught:.3f} to "
                     f"{v.candidate_caught:.3f} (interval {v.caught_change.low:+.3f} to "
                     f"{v.caught_change.high:+.3f}, {v.support} images)")
    return "; ".join(words) + (" — a malignant class may not fall" if v.malignant else "")


def label_audit(labels: np.ndarray, caught: dict[str, np.ndarray], reference_labels: np.ndarray,
                reference_caught: dict[str, np.ndarray], classes: list[str], policy: GatePolicy, *,
                minimum: int = 10) -> list[str]:
    """Findings on the new training images' labels, from the served model's own answers: a benign
    label whose new images the served model names or flags as a malignant class far more often
    than it does that label's validation images (the upload's share's Wilson lower bound above the
    validation share's upper bound, at the policy's confidence, `minimum` images or more) is
    likely to hold mislabelled malignant lesions. Each finding rejects the candidate: a model must
    not learn that a melanoma is a nevus from its uploads."""
    findings = []
    for c, label in enumerate(classes):
        mine, theirs = labels == c, reference_labels == c
        if label in policy.malignant or mine.sum() < minimum or not theirs.any():
            continue
        for malignant, flags in caught.items():
            if malignant not in reference_caught:
                continue
            hits, n = int(flags[mine].sum()), int(mine.sum())
            usual = int(reference_caught[malignant][theirs].sum())
            low = wilson_interval(hits, n, policy.confidence)
            high = wilson_interval(usual, int(theirs.sum()), policy.confidence)
            if low is not None and high is not None and low[0] > high[1]:
                findings.append(
                    f"{malignant}: the new images labelled {label} look like {malignant} — the served model "
                    f"names or flags {hits} of {n} ({hits / n:.0%}) as {malignant}, against {usual} of "
                    f"{int(theirs.sum())} ({usual / theirs.sum():.0%}) validation images of {label}: likely "
                    f"mislabelled {malignant} images, which would teach the model to miss it")
    return findings


def combine(sets: list[GateSet], classes: list[str], policy: GatePolicy, *,
            findings: list[str] | None = None) -> GateResult:
    """The verdict of every set: rejected when any set rejects or `findings` (`label_audit`) name
    a problem with the training data; not promoted automatically when a malignant class of
    `classes` has too few images in every set to judge. The top-level figures are the first set's."""
    if not sets:
        raise ValueError("a gate needs at least one held-out set")
    reasons = [*(findings or []), *(r for s in sets for r in s.reasons)]
    judged = {v.label for s in sets for v in s.classes if v.judgement != "not enough data"}
    unjudged = [c for c in classes if c in policy.malignant and c not in judged]
    for label in unjudged if policy.unjudged_malignant_blocks else []:
        seen = ", ".join(f"{next((v.support for v in s.classes if v.label == label), 0)} in {s.name}"
                         for s in sets)
        reasons.append(f"cannot judge {label}: {seen} held-out images, fewer than the "
                       f"{policy.min_class_support} needed; absence of evidence is not a pass (an operator "
                       "may still promote with force and a reason)")
    accepted: list[str] = []
    if not reasons:
        for s in sets:
            gains = [v for v in s.classes if v.malignant and v.judgement == "better" and v.change]
            for v in s.classes:
                if v.judgement == "worse" and v.change is not None:
                    paid = ", ".join(f"{g.label} {g.change.difference:+.3f}" for g in gains if g.change)
                    accepted.append(f"{s.name}: accepted the trade: {v.label} recall "
                                    f"{v.change.difference:+.3f} for {paid}")
            thin = [v.label for v in s.classes if v.judgement == "not enough data"]
            thin += [c for c in unjudged if c not in thin and not any(v.label == c for v in s.classes)]
            if thin:
                accepted.append(f"{s.name}: not enough held-out images to judge {', '.join(thin)} "
                                f"(fewer than {policy.min_class_support} each)")
        accepted.append("not worse than the current model beyond the noise of the held-out images ("
                        + "; ".join(f"{s.name}: {s.images} images" for s in sets) + ")")
    first = sets[0]
    return GateResult(passed=not reasons, reasons=reasons or accepted,
                      candidate_balanced_accuracy=first.candidate_balanced_accuracy,
                      current_balanced_accuracy=first.current_balanced_accuracy,
                      balanced_accuracy_change=first.balanced_accuracy_change, classes=first.classes,
                      policy=policy, sets=sets, unjudged=unjudged)


def apply_gate(labels: np.ndarray, candidate_correct: np.ndarray, current_correct: np.ndarray | None,
               classes: list[str], policy: GatePolicy, *, seed: int = 0) -> GateResult:
    """Judge a candidate against the current model from each model's right/wrong (0/1) on one
    held-out set (`labels` index `classes`), top-label recall only. With no current model (None)
    it passes."""
    if current_correct is None:
        bacc = balanced_accuracy(candidate_correct, labels) if len(labels) else 0.0
        return GateResult(passed=True, reasons=["no current model to compare with"],
                          candidate_balanced_accuracy=round(bacc, 4), current_balanced_accuracy=None,
                          policy=policy)
    present_classes = [classes[c] for c in range(len(classes)) if (labels == c).any()]
    judged = judge_set("held-out", "held-out images", labels, Answers(candidate_correct),
                       Answers(current_correct), classes, policy, seed=seed)
    return combine([judged], present_classes, policy)
