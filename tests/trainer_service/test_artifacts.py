"""Saving a version converts it to LiteRT once, and keeps the conversion only if it answers what
Keras answers: a conversion that differs is not saved (the version is, and says it has none)."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import pytest

from shared.classifier import PARITY_TOLERANCE, Classifier, parity_gap
from shared.litert import convert, sha256_of
from shared.manifest import ModelManifest
from tests.support.models import make_tiny_model
from trainer_service.ml.artifacts import save_artifact

pytestmark = pytest.mark.timeout(120)


def tiny(directory: Path) -> tuple[keras.Model, ModelManifest]:
    manifest = ModelManifest.model_validate_json((directory / "manifest.json").read_text())
    return keras.saving.load_model(directory / "model.keras", compile=False), manifest


def test_a_saved_version_carries_its_litert_file_and_its_digest(tiny_model_dir: Path, tmp_path: Path) -> None:
    model, manifest = tiny(tiny_model_dir)
    directory = save_artifact(model, manifest, tmp_path / "v1")
    record = manifest.litert  # the caller's manifest, which it goes on to publish
    assert record is not None and record.file == "model.tflite"
    assert record.sha256 == sha256_of((directory / "model.tflite").read_bytes())
    assert 0 <= record.parity_gap <= record.tolerance == PARITY_TOLERANCE
    assert ModelManifest.model_validate_json((directory / "manifest.json").read_text()).litert == record

    served = Classifier.load(directory)
    keras_served = Classifier.load(directory, engine="tensorflow")
    assert (served.engine, keras_served.engine) == ("litert", "tensorflow")
    images = np.random.default_rng(3).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(served.predict(images), keras_served.predict(images), atol=1e-5)


def test_a_conversion_that_differs_from_keras_is_not_saved(
        tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The converter hands back another network of the same shape (here: other weights)."""
    model, manifest = tiny(tiny_model_dir)
    other, _ = tiny(make_tiny_model(tmp_path / "other", seed=1))
    monkeypatch.setattr("trainer_service.ml.artifacts.convert",
                        lambda _model, *args, **kw: convert(other, *args, **kw))
    with caplog.at_level(logging.WARNING):
        directory = save_artifact(model, manifest, tmp_path / "v1")
    assert manifest.litert is None and not (directory / "model.tflite").exists()
    assert "LiteRT output differs from Keras" in caplog.text and "saved without model.tflite" in caplog.text
    assert Classifier.load(directory, cache_dir=tmp_path / "cache").predict(
        np.zeros((1, 32, 32, 3), np.uint8)).shape == (1, 3)  # still served, from its Keras file


def test_a_conversion_that_fails_is_not_saved(tiny_model_dir: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    def broken(*_: object, **__: object) -> bytes:
        raise RuntimeError("op not supported")

    model, manifest = tiny(tiny_model_dir)
    monkeypatch.setattr("trainer_service.ml.artifacts.convert", broken)
    with caplog.at_level(logging.WARNING):
        save_artifact(model, manifest, tmp_path / "v1")
    assert manifest.litert is None and "op not supported" in caplog.text


def test_the_parity_check_sees_logits_that_a_flat_softmax_hides() -> None:
    """Eight classes near 1/8 each: one logit off by 5e-4 moves its probability by only ~5e-5
    (under the tolerance), but the centred log-probabilities show it."""
    logits = np.zeros((2, 8), np.float32)
    shifted = logits.copy()
    shifted[:, 3] += 5e-4

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return np.asarray(e / e.sum(axis=1, keepdims=True))

    assert np.abs(softmax(shifted) - softmax(logits)).max() < PARITY_TOLERANCE
    assert parity_gap([softmax(logits)], [softmax(shifted)], 8) > PARITY_TOLERANCE
    assert parity_gap([softmax(logits)], [softmax(logits)], 8) == 0


def test_the_parity_check_refuses_a_conversion_that_lost_the_ood_output() -> None:
    probabilities, ood = np.full((2, 3), 1 / 3), np.array([[4.0], [5.0]])
    assert parity_gap([probabilities, ood], [probabilities, ood], 3) == 0
    assert parity_gap([probabilities, ood], [probabilities], 3) == float("inf")
