"""`Recipe.average_last`: the mean of the last epochs' weights is scored once more after the last
epoch and kept when it beats every epoch; a stopped run resumes to the same mean."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from tests.trainer_service.test_checkpoint import RECIPE, images, tiny_classifier
from trainer_service.ml.checkpoint import Checkpoint
from trainer_service.ml.training import Recipe, fine_tune

AVERAGING = Recipe(**{**RECIPE.__dict__, "epochs": 4, "average_last": 3})


class Recorder:
    """A scorer that keeps the weights it was shown and scores them by `scores`, in turn."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = scores
        self.seen: list[list[np.ndarray]] = []

    def __call__(self, model: keras.Model) -> tuple[float, dict[str, float]]:
        self.seen.append([np.array(w) for w in model.get_weights()])
        return self.scores[len(self.seen) - 1], {}


def test_the_average_of_the_last_epochs_is_kept_when_it_scores_best() -> None:
    data, model = images(), tiny_classifier()
    scorer = Recorder([0.5, 0.6, 0.7, 0.6, 0.9])  # epochs 1-4, then the average
    history = fine_tune(model, data, data, AVERAGING, lambda _: None, score=scorer)

    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 4]
    assert history[-1]["averaged_epochs"] == [2, 4] and history[-1]["kept"] is True
    assert not any(row.get("kept") for row in history[:-1])
    epochs_2_to_4 = scorer.seen[1:4]
    want = [np.mean([epoch[i] for epoch in epochs_2_to_4], axis=0) for i in range(len(epochs_2_to_4[0]))]
    assert not np.allclose(epochs_2_to_4[0][0], epochs_2_to_4[-1][0])  # the epochs do differ
    for got, expected, scored in zip(model.get_weights(), want, scorer.seen[4], strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(scored, expected, rtol=1e-5, atol=1e-6)


def test_the_best_epoch_is_kept_when_the_average_scores_lower() -> None:
    data, model = images(), tiny_classifier()
    scorer = Recorder([0.5, 0.8, 0.7, 0.6, 0.75])
    history = fine_tune(model, data, data, AVERAGING, lambda _: None, score=scorer)

    assert [row.get("kept", False) for row in history] == [False, True, False, False, False]
    for got, epoch_2 in zip(model.get_weights(), scorer.seen[1], strict=True):
        np.testing.assert_array_equal(got, epoch_2)


def test_a_stopped_averaging_run_resumes_to_the_same_average(tmp_path: Path) -> None:
    data = images()
    unbroken = tiny_classifier()
    scores = [0.1, 0.2, 0.3, 0.4, 0.9]
    fine_tune(unbroken, data, data, AVERAGING, lambda _: None, score=Recorder(scores))

    checkpoint = Checkpoint(tmp_path / "ckpt")
    stop_each_epoch = Recipe(**{**AVERAGING.__dict__, "max_minutes": 0.0})
    resumed = tiny_classifier()
    for _ in range(3):  # epochs 1, 2 and 3 in three processes; the first two averaged ones saved
        fine_tune(tiny_classifier(), data, data, stop_each_epoch, lambda _: None,
                  score=Recorder(scores), checkpoint=checkpoint)
    assert checkpoint.average_weights() is not None
    history = fine_tune(resumed, data, data, AVERAGING, lambda _: None,
                        score=Recorder(scores[3:]), checkpoint=checkpoint)
    assert history[-1]["averaged_epochs"] == [2, 4] and history[-1]["kept"] is True
    for got, want in zip(resumed.get_weights(), unbroken.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_more_epochs_averaged_than_trained_is_refused() -> None:
    with pytest.raises(ValueError, match="average_last"):
        Recipe(epochs=3, average_last=4)
