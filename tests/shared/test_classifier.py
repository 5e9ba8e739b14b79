"""The classifier's engines: LiteRT serves what Keras would answer, or TensorFlow serves instead."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from shared import litert
from shared.classifier import Classifier


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)


def test_litert_answers_what_tensorflow_answers(tiny_model_dir: Path, tmp_path: Path,
                                                images: np.ndarray) -> None:
    lite = Classifier.load(tiny_model_dir, engine="litert", cache_dir=tmp_path)
    keras = Classifier.load(tiny_model_dir, engine="tensorflow")
    assert (lite.engine, keras.engine) == ("litert", "tensorflow")
    np.testing.assert_allclose(lite.predict(images), keras.predict(images), atol=1e-5)
    np.testing.assert_allclose(lite.predict(images).sum(axis=1), 1.0, atol=1e-6)


def test_concurrent_litert_calls_each_get_their_own_answer(tiny_model_dir: Path, tmp_path: Path,
                                                          images: np.ndarray) -> None:
    classifier = Classifier.load(tiny_model_dir, cache_dir=tmp_path)
    classifier.warm_up(max_batch_size=4, streams=3)
    alone = [classifier.predict(images[i:i + 1]) for i in range(len(images))]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda i: classifier.predict(images[i:i + 1]),
                                 list(range(len(images))) * 20))
    for i, answer in enumerate(together):
        np.testing.assert_array_equal(answer, alone[i % len(images)])


def test_a_second_load_of_the_same_file_reuses_the_conversion(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Classifier.load(tiny_model_dir, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.tflite"))) == 1
    import tensorflow as tf

    def no_conversion(*_: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_keras_model", no_conversion)
    assert Classifier.load(tiny_model_dir, cache_dir=tmp_path).engine == "litert"


def test_tensorflow_serves_when_conversion_fails(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                 images: np.ndarray,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    def broken(*_: object) -> bytes:
        raise RuntimeError("op not supported")

    monkeypatch.setattr(litert, "convert", broken)
    classifier = Classifier.load(tiny_model_dir)
    assert classifier.engine == "tensorflow"
    assert "op not supported" in caplog.text
    assert classifier.predict(images).shape == (len(images), len(classifier.classes))


def test_tensorflow_serves_when_litert_answers_differently(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    answer = litert.LiteRTForward.__call__
    monkeypatch.setattr(litert.LiteRTForward, "__call__",
                        lambda self, images: [o[:, ::-1] for o in answer(self, images)])  # classes swapped
    assert Classifier.load(tiny_model_dir, cache_dir=tmp_path).engine == "tensorflow"
    assert "differs from Keras" in caplog.text


def test_an_unknown_engine_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        Classifier.load(tiny_model_dir, engine="onnx")


def test_an_unwritable_cache_still_serves_litert(tiny_model_dir: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    not_a_directory = tmp_path / "cache"
    not_a_directory.write_text("a file where the cache directory should be")
    assert Classifier.load(tiny_model_dir, cache_dir=not_a_directory).engine == "litert"
    assert "could not cache" in caplog.text
