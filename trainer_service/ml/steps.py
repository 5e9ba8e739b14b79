"""The steps every training run shares, the base training command (`commands.train.run_job`) and the
head retrain (`retrain.retrain_head`) alike: calibrate on validation, then describe the result.

Each run has its own data and fit steps (images from class folders and a full fine-tune; the
catalog's cached embeddings and a new head); from validation logits on, the rule is one:
`calibrate` fits the temperature on the pooled validation logits and chooses the referral
thresholds and the uncertainty threshold on the calibrated probabilities, and `describe` writes
the manifest fields that follow from the classes and the calibration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.manifest import ModelManifest, ReferralThreshold, Uncertainty
from shared.operating_policy import OperatingPolicy
from shared.taxonomy import MALIGNANT, PARENTS
from trainer_service.ml.artifacts import code_version
from trainer_service.ml.calibration import fit_temperature
from trainer_service.ml.operating import (
    Scored,
    calibrated,
    cross_validated_bias,
    referral_thresholds,
    uncertainty_threshold,
)


@dataclass(frozen=True)
class Calibration:
    """What validation decided: the temperature, the probabilities it gives each validation
    source, and the referral and uncertainty thresholds chosen on those probabilities."""

    temperature: float
    probabilities: list[Scored]
    referral: dict[str, ReferralThreshold]
    uncertainty: Uncertainty


def calibrate(validation: list[Scored], classes: list[str], allowed: np.ndarray, *,
              policy: OperatingPolicy) -> Calibration:
    """Calibrate on `validation` (logits per source): one temperature for the pooled logits, then
    each malignant class's referral threshold (its validation recall's lower bound at the policy's
    `referral_confidence` reaching its `referral_recall` in every source) and the confidence below
    which answers are uncertain (the answered share's accuracy at its `uncertain_below_accuracy`)."""
    pooled_logits = np.concatenate([s.values for s in validation])
    pooled_labels = np.concatenate([s.labels for s in validation])
    temperature = fit_temperature(pooled_logits, pooled_labels, allowed=allowed)
    probabilities = calibrated(validation, temperature)
    referral = referral_thresholds(probabilities, classes, MALIGNANT, allowed,
                                   target_recall=policy.referral_recall,
                                   confidence=policy.referral_confidence)
    uncertainty = uncertainty_threshold(probabilities, allowed,
                                        target_accuracy=policy.uncertain_below_accuracy)
    return Calibration(temperature, probabilities, referral, uncertainty)


@dataclass(frozen=True)
class OperatingPoints:
    """Every operating point chosen on validation: the class biases (to add to the logits), the
    span cross-validation chose for them and what each span scored, and the calibration after them."""

    class_bias: np.ndarray
    span: float
    tried: dict[float, float]
    calibration: Calibration


def operating_points(raw: list[Scored], classes: list[str], allowed: np.ndarray, *, policy: OperatingPolicy,
                     fit_bias: bool = True,
                     floor: Callable[[np.ndarray], np.ndarray] | None = None) -> OperatingPoints:
    """Class biases (2-fold cross-validated on `raw`, the validation logits per source, unless
    `fit_bias` is False; then raised by `floor`, given the biases, where a retrain must keep a
    class's recall), then `calibrate` on the biased logits: the one rule of the base recipe and of
    head retrains."""
    bias, span, tried = cross_validated_bias(raw, allowed) if fit_bias else (np.zeros(len(classes)), 0.0, {})
    if floor is not None:
        bias = floor(bias)
    adjusted = [Scored(s.source, s.values + bias, s.labels) for s in raw]
    calibration = calibrate(adjusted, classes, allowed, policy=policy)
    return OperatingPoints(bias, span, tried, calibration)


def describe(version: str, classes: list[str], *, temperature: float, referral: dict[str, ReferralThreshold],
             uncertainty: Uncertainty, **fields: Any) -> ModelManifest:
    """The manifest of a trained model: what calibration chose (temperature, referral and
    uncertainty thresholds), the parent links among `classes`, the code version that trained it,
    and the run's own `fields` (input size, backbone, data, metrics, detector, recipe...)."""
    parents = {c: p for c, p in PARENTS.items() if c in classes and p in classes}
    return ModelManifest(version=version, classes=classes, temperature=temperature, referral=referral,
                         uncertainty=uncertainty, code_version=code_version(), parents=parents, **fields)
