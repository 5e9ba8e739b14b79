"""The promotion gate judges drops against their noise, weighs malignant classes, and says why."""

from __future__ import annotations

import numpy as np

from trainer_service.ml.gate import apply_gate
from trainer_service.settings import TrainerSettings

CLASSES = ["benign_keratosis", "melanocytic_nevi", "melanoma"]
POLICY = TrainerSettings().gate_policy()


def answers(recalls: list[float], supports: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and a right/wrong vector with exactly the given recall per class."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(supports)])
    correct = np.concatenate([rng.permutation(np.arange(n) < round(r * n))
                              for r, n in zip(recalls, supports, strict=True)])
    return labels, correct.astype(float)


def test_one_image_on_a_tiny_benign_class_is_not_enough_to_reject() -> None:
    labels, old = answers([1.0, 0.8, 0.7], [6, 60, 60])
    _, new = answers([0.833, 0.8, 0.7], [6, 60, 60], seed=1)  # one keratosis of six missed
    result = apply_gate(labels, new, old, CLASSES, POLICY)
    assert result.passed, result.reasons
    assert {v.label: v.judgement for v in result.classes}["benign_keratosis"] == "not enough data"
    assert any("not enough held-out images" in r for r in result.reasons)


def test_a_malignant_class_too_thin_to_judge_is_not_a_pass() -> None:
    labels, old = answers([0.8, 0.8, 0.7], [60, 60, 6])
    result = apply_gate(labels, old, old, CLASSES, POLICY)  # the same answers: nothing fell
    assert not result.passed and result.unjudged == ["melanoma"]
    assert any("cannot judge melanoma" in r and "force" in r for r in result.reasons)


def test_a_malignant_class_is_judged_on_named_or_flagged_and_each_set_apart() -> None:
    from trainer_service.ml.gate import Answers, combine, judge_set

    labels, correct = answers([0.8, 0.9, 0.6], [60, 300, 150])
    melanoma = labels == 2
    flagged_before = melanoma & (np.arange(len(labels)) % 10 != 0)  # 90 % of melanomas flagged
    flagged_after = melanoma & (np.arange(len(labels)) % 2 == 0)  # 50 %, same top labels
    current = Answers(correct, {"melanoma": (correct.astype(bool) & melanoma) | flagged_before})
    candidate = Answers(correct, {"melanoma": (correct.astype(bool) & melanoma) | flagged_after})
    reference = judge_set("reference", "lineage images", labels, candidate, current, CLASSES, POLICY)
    same = judge_set("uploads", "held-out uploads", labels, current, current, CLASSES, POLICY)
    verdict = {v.label: v for v in reference.classes}["melanoma"]
    assert verdict.change is not None and verdict.change.difference == 0  # top label unchanged
    assert verdict.caught_change is not None and verdict.caught_change.high < 0
    assert verdict.judgement == "worse" and verdict.candidate_specificity == 1.0
    result = combine([reference, same], CLASSES, POLICY)
    assert not result.passed and [s.name for s in result.sets] == ["reference", "uploads"]
    assert any(r.startswith("reference: melanoma caught") for r in result.reasons), result.reasons
    assert not same.reasons


def test_a_damaged_candidate_is_rejected_with_its_numbers() -> None:
    labels, old = answers([0.8, 0.9, 0.7], [60, 300, 60])
    _, new = answers([0.3, 0.35, 0.3], [60, 300, 60], seed=2)  # as good as shuffled labels
    result = apply_gate(labels, new, old, CLASSES, POLICY)
    assert not result.passed
    assert result.balanced_accuracy_change is not None and result.balanced_accuracy_change.high < 0
    assert any("balanced accuracy fell" in r for r in result.reasons)
    assert any("melanoma" in r and "may not fall" in r for r in result.reasons)


def test_a_malignant_gain_pays_for_a_benign_drop_when_the_policy_allows() -> None:
    labels, old = answers([0.8, 0.9, 0.5], [150, 300, 150])
    _, new = answers([0.68, 0.9, 0.64], [150, 300, 150], seed=3)  # bkl -0.12, melanoma +0.14
    result = apply_gate(labels, new, old, CLASSES, POLICY)
    judged = {v.label: v.judgement for v in result.classes}
    assert judged["benign_keratosis"] == "worse" and judged["melanoma"] == "better"
    assert result.passed and any("accepted the trade" in r for r in result.reasons)
    strict = POLICY.model_copy(update={"accept_benign_for_malignant": False})
    refused = apply_gate(labels, new, old, CLASSES, strict)
    assert not refused.passed and any("benign_keratosis" in r for r in refused.reasons)


def test_a_melanoma_drop_beyond_noise_rejects_even_with_better_balanced_accuracy() -> None:
    labels, old = answers([0.5, 0.7, 0.8], [150, 300, 150])
    _, new = answers([0.8, 0.9, 0.65], [150, 300, 150], seed=4)
    result = apply_gate(labels, new, old, CLASSES, POLICY)
    assert result.candidate_balanced_accuracy > (result.current_balanced_accuracy or 0)
    assert not result.passed and any("melanoma" in r for r in result.reasons)


def test_without_a_current_model_it_passes() -> None:
    labels, new = answers([0.5, 0.5, 0.5], [10, 10, 10])
    assert apply_gate(labels, new, None, CLASSES, POLICY).passed


def test_a_head_trained_on_shuffled_labels_is_rejected() -> None:
    from shared.taxonomy import admissible, decide
    from trainer_service.ml.calibration import softmax
    from trainer_service.ml.head import fit_head

    rng = np.random.default_rng(5)
    centres = rng.normal(0, 1.5, (3, 32))
    y_fit, y_held = rng.integers(0, 3, 600), np.repeat([0, 1, 2], 60)
    x_fit = centres[y_fit] + rng.normal(0, 1, (600, 32))
    x_held = centres[y_held] + rng.normal(0, 1, (180, 32))
    heads = {name: fit_head(x_fit.astype(np.float32), labels, 3, epochs=20)
             for name, labels in (("current", y_fit), ("damaged", rng.permutation(y_fit)))}
    allowed = admissible(CLASSES)

    def correct(name: str) -> np.ndarray:
        kernel, bias = heads[name]
        return np.asarray(allowed[y_held, decide(softmax(x_held @ kernel + bias), allowed)])

    result = apply_gate(y_held, correct("damaged"), correct("current"), CLASSES, POLICY)
    assert not result.passed
    assert result.current_balanced_accuracy is not None and result.current_balanced_accuracy > 0.8
    assert result.candidate_balanced_accuracy < 0.6
    assert any("balanced accuracy fell" in r for r in result.reasons), result.reasons
