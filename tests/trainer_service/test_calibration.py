"""Temperature scaling finds the temperature that generated the labels; ECE measures miscalibration."""

from __future__ import annotations

import numpy as np
import pytest

from trainer_service.ml.calibration import expected_calibration_error, fit_temperature, softmax


def sample(rng: np.random.Generator, n: int, true_temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits / true_temperature): calibrated at that T."""
    logits = rng.normal(0, 3, (n, 5))
    probs = softmax(logits, true_temperature)
    labels = np.array([rng.choice(5, p=p) for p in probs])
    return logits, labels


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_the_generating_temperature(true_temperature: float) -> None:
    logits, labels = sample(np.random.default_rng(0), 8000, true_temperature)
    assert fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.1)


def test_scaling_lowers_ece_of_an_overconfident_model() -> None:
    logits, labels = sample(np.random.default_rng(1), 8000, 3.0)
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits, fit_temperature(logits, labels)), labels)
    assert before > 0.1
    assert after < 0.03


def test_ece_of_known_cases() -> None:
    labels = np.array([0, 0, 1, 1])
    perfect = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, labels) == pytest.approx(0.0)
    wrong_and_sure = perfect[:, ::-1]
    assert expected_calibration_error(wrong_and_sure, labels) == pytest.approx(1.0)
    half = np.full((4, 2), 0.5)  # 50 % confident, 50 % right (argmax picks class 0)
    assert expected_calibration_error(half, labels) == pytest.approx(0.0)


def test_fit_temperature_needs_data() -> None:
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int))
