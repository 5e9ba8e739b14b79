"""Head retrains embed the catalog on LiteRT, with the same numbers TensorFlow gives."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from tests.support.models import make_tiny_model
from trainer_service.ml.evaluation import predict
from trainer_service.ml.network import embedding_model
from trainer_service.ml.retrain import embedder


def test_embeddings_come_from_litert_and_match_tensorflow(tmp_path: Path) -> None:
    directory = make_tiny_model(tmp_path / "tiny")
    model = keras.saving.load_model(directory / "model.keras", compile=False)
    said: list[str] = []
    embed = embedder(model, directory / "model.keras", tmp_path / "cache", said.append)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(embed(images), predict(embedding_model(model), images), atol=1e-4)
    assert said == []  # no fallback to TensorFlow
    assert list((tmp_path / "cache").glob("*-embedding.tflite"))
