"""A fine-tuning run stopped after an epoch resumes with the same command and ends where an
unbroken run ends: weights, optimizer moments, epoch counter and per-epoch random streams."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from trainer_service.ml.checkpoint import Checkpoint
from trainer_service.ml.dataset import ImageSet
from trainer_service.ml.network import build_classifier
from trainer_service.ml.training import Recipe, fine_tune


def tiny_classifier() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, name="conv")(keras.layers.Rescaling(1 / 255)(inputs))
    return build_classifier(keras.Model(inputs, x), 2)


def images() -> ImageSet:
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 12, np.int32)
    pixels = rng.integers(0, 256, (24, 16, 16, 3)).astype(np.uint8)
    pixels[labels == 1, :, :, 0] = 255
    names = tuple(f"{i}.png" for i in range(24))
    return ImageSet(pixels, labels, ("a", "b"), names, names, names)


RECIPE = Recipe(batch_size=8, epochs=3, steps_per_epoch=2, warmup_steps=1, first_trainable=None)


def test_a_stopped_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    data = images()
    logged: list[str] = []
    unbroken = tiny_classifier()
    straight = fine_tune(unbroken, data, data, RECIPE, logged.append)

    model = tiny_classifier()
    checkpoint = Checkpoint(tmp_path / "ckpt")
    stop_early = Recipe(**{**RECIPE.__dict__, "max_minutes": 0.0})
    first = fine_tune(model, data, data, stop_early, logged.append, checkpoint=checkpoint)
    assert [row["epoch"] for row in first] == [1]
    assert checkpoint.exists()

    resumed = tiny_classifier()  # a new process: fresh weights, then the checkpoint
    history = fine_tune(resumed, data, data, RECIPE, logged.append, checkpoint=checkpoint)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert any("resumed after epoch 1" in line for line in logged)
    # epochs 2 and 3 saw the same batches and optimizer state as in the unbroken run
    np.testing.assert_allclose([r["loss"] for r in history], [r["loss"] for r in straight], rtol=1e-5)
    assert len({round(r["loss"], 6) for r in straight}) == 3  # the losses do change epoch to epoch
    for got, want in zip(resumed.get_weights(), unbroken.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
