"""Proportions, each written once: a class's recall, balanced accuracy, a flag's recall and
specificity, the Wilson interval and the bootstrap's percentile interval
(`trainer_service.ml.proportions`), checked against scipy and sklearn."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import balanced_accuracy_score, recall_score

from trainer_service.ml.proportions import (
    balanced_accuracy,
    class_recalls,
    flag_rates,
    percentile_interval,
    wilson_interval,
    wilson_lower_bound,
)


def test_each_class_present_has_its_recall_and_counts_once_in_balanced_accuracy() -> None:
    labels = np.array([0] * 90 + [2] * 10)  # class 1 absent
    correct = np.concatenate([np.ones(90, bool), np.zeros(10, bool)])  # the majority right, the rest wrong
    assert class_recalls(correct, labels) == {0: 1.0, 2: 0.0}
    assert balanced_accuracy(correct, labels) == 0.5  # accuracy would say 0.9


def test_balanced_accuracy_of_the_argmax_is_sklearns() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 300)
    predicted = np.where(rng.random(300) < 0.7, labels, rng.integers(0, 4, 300))
    assert balanced_accuracy(predicted == labels, labels) == pytest.approx(
        balanced_accuracy_score(labels, predicted))


def test_there_is_no_balanced_accuracy_of_no_images() -> None:
    with pytest.raises(ValueError, match="no images"):
        balanced_accuracy(np.zeros(0, bool), np.zeros(0, np.int64))


@pytest.mark.parametrize(("hits", "n"), [(26, 30), (0, 12), (30, 30), (201, 227)])
def test_the_wilson_interval_is_scipys(hits: int, n: int) -> None:
    expected = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(hits, n) == pytest.approx((expected.low, expected.high), abs=1e-9)


def test_no_interval_without_examples() -> None:
    assert wilson_interval(0, 0) is None
    assert wilson_lower_bound(0, 0, 0.95) == 0.0


def test_the_one_sided_bound_asks_for_more_the_fewer_the_cases() -> None:
    for hits, n in [(79, 90), (45, 56), (8, 10), (820, 1000)]:
        # a one-sided 95 % bound is the lower end of a two-sided 90 % interval
        expected = binomtest(hits, n).proportion_ci(confidence_level=0.90, method="wilson").low
        assert wilson_lower_bound(hits, n, 0.95) == pytest.approx(expected, abs=1e-9)
    assert wilson_lower_bound(79, 90, 0.5) == pytest.approx(79 / 90)  # 0.5: the recall itself
    assert wilson_lower_bound(78, 90, 0.95) < 0.80 <= wilson_lower_bound(79, 90, 0.95)
    assert wilson_lower_bound(8, 10, 0.95) < wilson_lower_bound(80, 100, 0.95) < 0.8


def test_a_flags_recall_and_specificity_are_sklearns_recalls_of_each_side() -> None:
    rng = np.random.default_rng(1)
    positive = rng.random(400) < 0.2
    flagged = np.where(positive, rng.random(400) < 0.8, rng.random(400) < 0.3)
    recall, specificity = flag_rates(flagged.astype(int), positive)  # 0/1 counts as bool
    assert recall == pytest.approx(recall_score(positive, flagged))
    assert specificity == pytest.approx(recall_score(~positive, ~flagged))
    assert flag_rates(flagged[positive], positive[positive]) == (recall, None)  # no negatives
    assert flag_rates(flagged[~positive], positive[~positive]) == (None, specificity)  # no positives


def test_the_percentile_interval_holds_the_central_share_of_the_samples() -> None:
    assert percentile_interval(list(range(101)), 0.9) == pytest.approx((5.0, 95.0))
    assert percentile_interval(np.arange(101.0), 0.95) == pytest.approx((2.5, 97.5))
    assert percentile_interval([3.0, 1.0, 2.0], 0.0) == (2.0, 2.0)  # level 0: the median
    draws = np.random.default_rng(2).standard_normal(200_000)
    z = NormalDist().inv_cdf(0.975)
    assert percentile_interval(draws) == pytest.approx((-z, z), abs=0.03)


def test_there_is_no_percentile_interval_of_no_samples() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile_interval([])
