"""Operating points on validation: class biases for balanced accuracy, referral thresholds per source."""

from __future__ import annotations

import numpy as np
import pytest

from shared.taxonomy import admissible
from trainer_service.operating import Scored, balanced_accuracy_admitted, fit_class_bias, referral_thresholds


def test_class_bias_recovers_a_rare_class_the_argmax_misses() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0] * 200 + [1] * 20)
    logits = np.zeros((220, 2))
    logits[:, 1] = np.where(labels == 1, 0.5, -0.5) + rng.normal(0, 0.3, 220) - 2.0  # always "class 0"
    allowed = np.eye(2)
    before = balanced_accuracy_admitted(logits, labels, allowed)
    bias = fit_class_bias([Scored("a", logits, labels)], allowed)
    after = balanced_accuracy_admitted(logits + bias, labels, allowed)
    assert before == pytest.approx(0.5) and after > 0.9
    # with nothing to gain the offsets stay zero
    easy = np.eye(2)[labels] * 5
    np.testing.assert_array_equal(fit_class_bias([Scored("a", easy, labels)], allowed), 0.0)


def test_referral_threshold_reaches_the_recall_on_every_source() -> None:
    classes = ["melanocytic_nevi", "melanoma"]
    rng = np.random.default_rng(1)

    def source(name: str, separation: float) -> Scored:
        labels = np.array([0] * 100 + [1] * 40)
        p_mel = np.clip(np.where(labels == 1, 0.5 + separation, 0.5 - separation) + rng.normal(0, 0.15, 140), 0, 1)
        return Scored(name, np.stack([1 - p_mel, p_mel], axis=1), labels)

    sets = [source("easy", 0.3), source("hard", 0.05)]
    points = referral_thresholds(sets, classes, ("melanoma", "basal_cell_carcinoma"), admissible(classes),
                                 target_recall=0.8)
    assert set(points) == {"melanoma"}  # a class the model lacks gets no threshold
    point = points["melanoma"]
    assert min(point.validation_recall.values()) >= 0.8
    assert point.validation_recall["hard"] == pytest.approx(0.8, abs=0.03)  # the harder source decides
    assert point.validation_specificity["easy"] > point.validation_specificity["hard"]


def test_cross_validation_keeps_offsets_only_when_they_generalise() -> None:
    from trainer_service.operating import cross_validated_bias

    rng = np.random.default_rng(2)
    labels = np.array([0] * 300 + [1] * 30)
    shifted = np.zeros((330, 2))
    shifted[:, 1] = np.where(labels == 1, 0.6, -0.6) + rng.normal(0, 0.3, 330) - 2.0  # a real offset to find
    bias, span, tried = cross_validated_bias([Scored("a", shifted, labels)], np.eye(2))
    assert span > 0 and bias[1] - bias[0] > 1.0 and tried[span] > tried[0.0] + 0.2
