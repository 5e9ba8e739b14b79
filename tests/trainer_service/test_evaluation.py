"""Classification metrics against hand-computed figures."""

from __future__ import annotations

import numpy as np
import pytest

from trainer_service.ml.evaluation import classification_metrics, format_report

CLASSES = ("a", "b", "c")


def one_hot_probs(predicted: list[int], k: int = 3) -> np.ndarray:
    probs = np.full((len(predicted), k), 0.1)
    probs[np.arange(len(predicted)), predicted] = 0.8
    return probs


def test_balanced_accuracy_recall_precision_and_confusion() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = [0, 0, 0, 1, 1, 0, 2, 2]
    m = classification_metrics(one_hot_probs(predicted), labels, CLASSES)
    assert m["confusion_matrix"] == [[3, 1, 0], [1, 1, 0], [0, 0, 2]]
    assert m["per_class"]["a"]["recall"] == pytest.approx(0.75)
    assert m["per_class"]["b"]["recall"] == pytest.approx(0.5)
    assert m["per_class"]["a"]["precision"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert "balanced accuracy: 0.7500" in format_report(m)


def test_auc_is_one_for_perfect_ranking_and_absent_classes_are_skipped() -> None:
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    m = classification_metrics(probs, labels, CLASSES)
    assert m["macro_auc_ovr"] == pytest.approx(1.0)
    assert m["per_class"]["c"]["recall"] is None and m["per_class"]["c"]["support"] == 0
    assert m["balanced_accuracy"] == pytest.approx(1.0)  # mean over classes present
