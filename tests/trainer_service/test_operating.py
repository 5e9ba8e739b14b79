"""Operating points on validation: class biases for balanced accuracy, referral thresholds per source."""

from __future__ import annotations

import numpy as np
import pytest

from shared.taxonomy import admissible
from trainer_service.ml.operating import Scored, fit_class_bias, mean_stratum_recall, referral_thresholds
from trainer_service.ml.proportions import wilson_lower_bound


def test_class_bias_recovers_a_rare_class_the_argmax_misses() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0] * 200 + [1] * 20)
    logits = np.zeros((220, 2))
    logits[:, 1] = np.where(labels == 1, 0.5, -0.5) + rng.normal(0, 0.3, 220) - 2.0  # always "class 0"
    allowed = np.eye(2)
    validation = [Scored("a", logits, labels)]
    before = mean_stratum_recall(validation, allowed, np.zeros(2))  # one source: its balanced accuracy
    bias = fit_class_bias(validation, allowed)
    after = mean_stratum_recall(validation, allowed, bias)
    assert before == pytest.approx(0.5) and after > 0.9
    # with nothing to gain the offsets stay zero
    easy = np.eye(2)[labels] * 5
    np.testing.assert_array_equal(fit_class_bias([Scored("a", easy, labels)], allowed), 0.0)


def test_referral_threshold_reaches_the_recall_on_every_source() -> None:
    classes = ["melanocytic_nevi", "melanoma"]
    rng = np.random.default_rng(1)

    def source(name: str, separation: float) -> Scored:
        labels = np.array([0] * 100 + [1] * 40)
        p_mel = np.clip(np.where(labels == 1, 0.5 + separation, 0.5 - separation) + rng.normal(0, 0.15, 140),
                        0, 1)
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
    from trainer_service.ml.operating import cross_validated_bias

    rng = np.random.default_rng(2)
    labels = np.array([0] * 300 + [1] * 30)
    shifted = np.zeros((330, 2))
    shifted[:, 1] = np.where(labels == 1, 0.6, -0.6) + rng.normal(0, 0.3, 330) - 2.0  # a real offset to find
    bias, span, tried = cross_validated_bias([Scored("a", shifted, labels)], np.eye(2))
    assert span > 0 and bias[1] - bias[0] > 1.0 and tried[span] > tried[0.0] + 0.2


def test_a_confident_referral_threshold_flags_more_when_validation_is_small() -> None:
    classes = ["melanocytic_nevi", "melanoma"]
    rng = np.random.default_rng(3)

    def source(positives: int) -> Scored:
        labels = np.array([0] * 200 + [1] * positives)
        p_mel = np.clip(np.where(labels == 1, 0.6, 0.4) + rng.normal(0, 0.15, len(labels)), 0, 1)
        return Scored("s", np.stack([1 - p_mel, p_mel], axis=1), labels)

    allowed = admissible(classes)
    margin = {}
    for positives in (30, 300):
        data = [source(positives)]
        point = referral_thresholds(data, classes, ("melanoma",), allowed, target_recall=0.8)["melanoma"]
        sure = referral_thresholds(data, classes, ("melanoma",), allowed, target_recall=0.8,
                                   confidence=0.95)["melanoma"]
        assert sure.threshold < point.threshold and sure.confidence == 0.95
        found = round(sure.validation_recall["s"] * positives)  # the fewest whose bound reaches 0.8
        assert wilson_lower_bound(found, positives, 0.95) >= 0.8 > wilson_lower_bound(found - 1, positives,
                                                                                      0.95)
        margin[positives] = sure.validation_recall["s"] - 0.8
    assert margin[300] < margin[30]  # the margin shrinks as validation grows


def test_every_source_class_pair_counts_once_in_the_bias_objective() -> None:
    allowed = np.eye(3)
    # source "a": classes 0, 1, 2, all right; source "b": only class 0, always answered 1
    a = Scored("a", np.eye(3)[[0, 1, 2]] * 5, np.array([0, 1, 2]))
    b = Scored("b", np.eye(3)[[1, 1]] * 5, np.array([0, 0]))
    # four (source, class) pairs, three right: 0.75 (a mean of the sources' balanced accuracies: 0.5)
    assert mean_stratum_recall([a, b], allowed, np.zeros(3)) == pytest.approx(0.75)
