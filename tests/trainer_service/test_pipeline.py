"""The training stream: rebalanced sampling, weights that balance the loss, sane augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer_service.ml.pipeline import augment, class_sampling, training_stream


def test_sampling_power_interpolates_between_natural_and_uniform() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    natural, w_nat = class_sampling(labels, 3, power=1.0)
    np.testing.assert_allclose(natural, [0.9, 0.1, 0.0])
    uniform, w_uni = class_sampling(labels, 3, power=0.0)
    np.testing.assert_allclose(uniform, [0.5, 0.5, 0.0])
    np.testing.assert_allclose(w_uni[:2], [1.0, 1.0])
    root, w_root = class_sampling(labels, 3, power=0.5)
    np.testing.assert_allclose(root, [0.75, 0.25, 0.0])
    for probs, weights in ((natural, w_nat), (root, w_root)):
        contribution = probs * weights
        assert contribution[0] == pytest.approx(contribution[1])  # class-balanced expected loss
        assert contribution.sum() == pytest.approx(1.0)
        assert weights[2] == 0.0


def test_training_stream_rebalances_and_yields_model_inputs() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (100, 16, 16, 3), dtype=np.uint8)
    labels = np.array([0] * 90 + [1] * 10, dtype=np.int32)
    stream = training_stream(images, labels, 2, batch_size=50, power=0.0, seed=1)
    seen = []
    for x, y, w in stream.take(8):
        assert x.shape == (50, 16, 16, 3) and x.dtype == tf.float32
        assert float(tf.reduce_min(x)) >= 0.0 and float(tf.reduce_max(x)) <= 255.0
        np.testing.assert_allclose(w.numpy(), 1.0)
        seen += y.numpy().tolist()
    assert 0.4 < np.mean(seen) < 0.6  # uniform sampling despite 9:1 data


def test_augment_keeps_shape_and_changes_pixels() -> None:
    x = tf.random.uniform((4, 16, 16, 3), 0, 255, seed=0)
    tf.random.set_seed(0)
    y = augment(x, rotate=True)
    assert y.shape == x.shape
    assert float(tf.reduce_max(tf.abs(y - x))) > 1.0
