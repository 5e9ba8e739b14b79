"""How sure an evaluation figure is: the ECE floor of a calibrated model and bootstrap intervals
(`trainer_service.ml.metric_intervals`)."""

import numpy as np

from shared.taxonomy import admissible
from trainer_service.ml.calibration import expected_calibration_error
from trainer_service.ml.evaluation import classification_metrics
from trainer_service.ml.metric_intervals import bootstrap_intervals, calibrated_ece_floor

CLASSES = ("benign_keratosis", "melanocytic_nevi", "melanoma", "seborrheic_keratosis")


def _calibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels drawn from those predictions: calibrated by construction."""
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.full(len(CLASSES), 0.4), size=n)
    labels = np.array([rng.choice(len(CLASSES), p=p) for p in probabilities])
    return probabilities, labels


def test_a_calibrated_models_ece_on_a_small_set_is_about_its_floor_and_the_floor_shrinks_with_size() -> None:
    allowed = admissible(CLASSES)
    small, large = _calibrated(150, 0), _calibrated(3000, 1)
    floor_small = calibrated_ece_floor(small[0], allowed)
    floor_large = calibrated_ece_floor(large[0], allowed)
    assert floor_small["median"] > 0.03  # 150 images cannot show an ECE near 0
    assert floor_large["median"] < floor_small["median"] / 2  # 20 times the images
    assert floor_small["median"] <= floor_small["p90"]
    assert expected_calibration_error(*small, allowed) < 2 * floor_small["p90"]


def test_an_overconfident_model_stands_out_above_its_floor() -> None:
    allowed = admissible(CLASSES)
    probabilities, labels = _calibrated(3000, 2)
    sharpened = probabilities ** 3 / (probabilities ** 3).sum(axis=1, keepdims=True)
    floor = calibrated_ece_floor(sharpened, allowed)
    assert expected_calibration_error(sharpened, labels, allowed) > 3 * floor["p90"]


def test_bootstrap_intervals_hold_the_point_figures_and_narrow_with_more_images() -> None:
    small, large = _calibrated(150, 3), _calibrated(1500, 4)
    spans = {}
    for name, (probabilities, labels) in {"small": small, "large": large}.items():
        point = classification_metrics(probabilities, labels, CLASSES)
        ci = bootstrap_intervals(probabilities, labels, CLASSES, resamples=300)
        assert ci["balanced_accuracy"][0] <= point["balanced_accuracy"] <= ci["balanced_accuracy"][1]
        for cls in CLASSES:
            lo, hi = ci["auc"][cls]
            assert lo <= point["per_class"][cls]["auc"] <= hi
        spans[name] = ci["auc"]["melanoma"][1] - ci["auc"]["melanoma"][0]
    assert spans["large"] < spans["small"] / 2
    again = bootstrap_intervals(*small, CLASSES, resamples=50)
    assert bootstrap_intervals(*small, CLASSES, resamples=50) == again  # seeded: the same every run


def test_a_class_absent_from_the_set_has_no_auc_interval() -> None:
    probabilities, labels = _calibrated(200, 5)
    labels = np.where(labels == 0, 1, labels)  # no benign keratosis left
    assert "benign_keratosis" not in bootstrap_intervals(probabilities, labels, CLASSES, resamples=20)["auc"]
