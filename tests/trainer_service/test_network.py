"""The classifier graph: save -> load -> predict round trip, temperature, embeddings, freezing."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from shared.manifest import ModelManifest
from trainer_service.ml.artifacts import load_artifact, save_artifact
from trainer_service.ml.backbones import efficientnet_lite0
from trainer_service.ml.calibration import softmax
from trainer_service.ml.network import (
    build_classifier,
    embedding_model,
    logits_model,
    set_backbone_trainable,
    temperature_of,
    with_temperature,
)


@pytest.fixture(scope="module")
def tiny() -> keras.Model:
    """A random-init Lite0 classifier on 32x32 inputs, 3 classes."""
    keras.utils.set_random_seed(0)
    return build_classifier(efficientnet_lite0((32, 32)), 3)


def pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, 32, 32, 3)).astype(np.float32)


def test_outputs_are_probabilities(tiny: keras.Model) -> None:
    out = tiny(pixels(4), training=False).numpy()
    assert out.shape == (4, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert (out >= 0).all()


def test_temperature_divides_the_logits(tiny: keras.Model) -> None:
    x = pixels(4)
    logits = logits_model(tiny)(x, training=False).numpy()
    hot = with_temperature(tiny, 2.5)
    assert temperature_of(hot) == pytest.approx(2.5)
    np.testing.assert_allclose(hot(x, training=False).numpy(), softmax(logits, 2.5), atol=1e-5)
    with pytest.raises(ValueError):
        with_temperature(tiny, 0.0)


def test_save_load_predict_round_trip(tiny: keras.Model, tmp_path: Path) -> None:
    model = with_temperature(tiny, 1.7)
    manifest = ModelManifest(version="t1", classes=["a", "b", "c"], input_size=(32, 32), temperature=1.7)
    save_artifact(model, manifest, tmp_path / "t1")
    loaded, loaded_manifest = load_artifact(tmp_path / "t1")  # plain load_model, no custom objects
    x = pixels(3, seed=1)
    np.testing.assert_allclose(loaded(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-6)
    assert loaded_manifest.classes == ["a", "b", "c"] and tuple(loaded_manifest.input_size) == (32, 32)
    assert temperature_of(loaded) == pytest.approx(1.7)
    assert embedding_model(loaded)(x).shape == (3, 1280)
    with pytest.raises(FileExistsError):
        save_artifact(model, manifest, tmp_path / "t1")


def test_embedding_model_shares_weights(tiny: keras.Model) -> None:
    embed = embedding_model(tiny)
    assert embed.output_shape == (None, 1280)
    assert embed.get_layer("backbone") is tiny.get_layer("backbone")


def test_fine_tuning_unfreezes_after_the_named_layer_but_never_batchnorm(tiny: keras.Model) -> None:
    set_backbone_trainable(tiny, True, first_trainable="block1_expand_conv")
    backbone = tiny.get_layer("backbone")
    assert not backbone.get_layer("stem_conv").trainable
    assert not backbone.get_layer("block0_dw_conv").trainable
    assert backbone.get_layer("block1_expand_conv").trainable
    assert backbone.get_layer("head_conv").trainable
    assert not any(layer.trainable for layer in backbone.layers if isinstance(layer,
                                                                              keras.layers.BatchNormalization))
    set_backbone_trainable(tiny, False)
    assert [w.path for w in tiny.trainable_weights] == ["logits/kernel", "logits/bias"]
    with pytest.raises(ValueError):
        set_backbone_trainable(tiny, True, first_trainable="no_such_layer")
