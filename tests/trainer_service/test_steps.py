"""The steps the base training command and the head retrain share: one calibration rule on the
validation logits of every source, and one way to describe the result."""

from __future__ import annotations

import numpy as np
import pytest

from shared.manifest import ModelManifest
from shared.operating_policy import OperatingPolicy
from shared.taxonomy import admissible
from trainer_service.ml.calibration import fit_temperature
from trainer_service.ml.operating import Scored
from trainer_service.ml.steps import calibrate, describe

CLASSES = ["benign_keratosis", "melanocytic_nevi", "melanoma", "seborrheic_keratosis"]


def scored(source: str, n: int, sharpness: float, seed: int) -> Scored:
    """`n` validation cases whose logits favour the true class by `sharpness` (with noise)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    logits = rng.normal(0, 1, (n, len(CLASSES)))
    logits[np.arange(n), labels] += sharpness
    return Scored(source, logits, labels)


def test_the_temperature_is_fitted_on_every_source_pooled_and_the_thresholds_on_its_probabilities() -> None:
    allowed = admissible(CLASSES)
    overconfident, underconfident = scored("ham", 400, 8.0, 0), scored("isic", 400, 0.5, 1)
    calibration = calibrate([overconfident, underconfident], CLASSES, allowed,
                            policy=OperatingPolicy(referral_recall=0.8, uncertain_below_accuracy=0.85))

    pooled = fit_temperature(np.concatenate([overconfident.values, underconfident.values]),
                             np.concatenate([overconfident.labels, underconfident.labels]), allowed=allowed)
    assert calibration.temperature == pytest.approx(pooled)
    alone = fit_temperature(overconfident.values, overconfident.labels, allowed=allowed)
    assert abs(calibration.temperature - alone) > 0.1, "both sources count, not the first alone"
    assert [s.source for s in calibration.probabilities] == ["ham", "isic"]
    for s in calibration.probabilities:
        np.testing.assert_allclose(s.values.sum(axis=1), 1.0, rtol=1e-6)
    assert "melanoma" in calibration.referral and calibration.referral["melanoma"].target_recall == 0.8
    assert calibration.uncertainty.target_accuracy == 0.85


def test_a_description_links_only_the_classes_the_model_has() -> None:
    calibration = calibrate([scored("catalog", 200, 4.0, 2)], CLASSES, admissible(CLASSES),
                            policy=OperatingPolicy(referral_confidence=0.5))

    def described(version: str, classes: list[str]) -> ModelManifest:
        return describe(version, classes, temperature=calibration.temperature, referral=calibration.referral,
                        uncertainty=calibration.uncertainty, input_size=(32, 32))

    full = described("v-full", CLASSES)
    assert full.parents == {"seborrheic_keratosis": "benign_keratosis"}
    assert full.temperature == calibration.temperature and full.uncertainty == calibration.uncertainty
    assert described("v-part", ["melanocytic_nevi", "melanoma", "seborrheic_keratosis"]).parents == {}
