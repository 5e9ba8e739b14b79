"""The answer a clinician gets: the finest class with its parent, rolled-up probabilities, referral flags."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest

from inference_worker.service import to_prediction
from shared.classifier import Classifier
from shared.manifest import ModelManifest, OodDetector, ReferralThreshold, Uncertainty
from shared.taxonomy import admissible_for

CLASSES = ["benign_keratosis", "melanocytic_nevi", "melanoma", "seborrheic_keratosis"]


def classifier(referral: dict[str, float], **extra: Any) -> Classifier:
    """What `to_prediction` reads of a loaded model (its manifest, classes, version, links), without
    loading one."""
    manifest = ModelManifest(
        version="v2-test", classes=CLASSES, input_size=(32, 32),
        parents={"seborrheic_keratosis": "benign_keratosis"},
        referral={k: ReferralThreshold(threshold=v, target_recall=0.8) for k, v in referral.items()}, **extra)
    return cast(Classifier, SimpleNamespace(manifest=manifest, classes=CLASSES, version=manifest.version,
                                            links=admissible_for(CLASSES, manifest.parents)))


def row(*probabilities: float, ood: float = np.nan) -> np.ndarray:
    return np.array([*probabilities, ood])


def test_the_finest_class_comes_with_its_parent_and_probabilities_roll_up() -> None:
    answer = to_prediction(row(0.1, 0.2, 0.15, 0.55), classifier({}), top_k=3)
    assert (answer.label, answer.parent) == ("seborrheic_keratosis", "benign_keratosis")
    assert answer.confidence == pytest.approx(0.55)
    assert answer.probabilities["benign_keratosis"] == pytest.approx(0.65)
    top_level = [p for name, p in answer.probabilities.items() if name != "seborrheic_keratosis"]
    assert sum(top_level) == pytest.approx(1.0)
    assert [s.label for s in answer.top_k] == ["benign_keratosis", "seborrheic_keratosis", "melanocytic_nevi"]
    assert answer.top_k[1].parent == "benign_keratosis" and answer.top_k[0].parent is None


def test_a_melanoma_above_its_threshold_is_flagged_whatever_the_top_label() -> None:
    answer = to_prediction(row(0.05, 0.6, 0.3, 0.05), classifier({"melanoma": 0.2}), top_k=3)
    assert answer.label == "melanocytic_nevi"
    assert [(r.label, r.threshold) for r in answer.referral] == [("melanoma", 0.2)]
    assert answer.referral[0].probability == pytest.approx(0.3)
    calm = to_prediction(row(0.05, 0.8, 0.1, 0.05), classifier({"melanoma": 0.2}), top_k=3)
    assert calm.referral == [] and calm.parent is None


def test_an_image_far_from_the_training_data_is_out_of_distribution() -> None:
    detector = OodDetector(dims=64, threshold=2.5)
    model = classifier({}, ood=detector)
    near = to_prediction(row(0.1, 0.7, 0.1, 0.1, ood=1.1), model, top_k=3)
    far = to_prediction(row(0.1, 0.7, 0.1, 0.1, ood=9.0), model, top_k=3)
    assert (near.out_of_distribution, near.ood_score, near.ood_threshold) == (False, 1.1, 2.5)
    assert far.out_of_distribution and far.label == "melanocytic_nevi"  # probabilities still given
    legacy = to_prediction(row(0.1, 0.7, 0.1, 0.1), classifier({}), top_k=3)
    assert legacy.out_of_distribution is False and legacy.ood_score is None


def test_a_low_confidence_answer_is_uncertain() -> None:
    model = classifier({},
                       uncertainty=Uncertainty(threshold=0.6, target_accuracy=0.9, validation_coverage=0.7,
                                                   validation_accuracy=0.91))
    assert to_prediction(row(0.1, 0.55, 0.25, 0.1), model, top_k=3).uncertain
    assert not to_prediction(row(0.05, 0.85, 0.05, 0.05), model, top_k=3).uncertain
