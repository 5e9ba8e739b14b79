"""The out-of-distribution score: fitted on training embeddings, built into the model, and far
images score far above the threshold that lets 99 % of held-out images through."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from tests.support.models import make_tiny_model
from trainer_service.ml.evaluation import predict
from trainer_service.ml.network import embedding_model
from trainer_service.ml.ood import fit_ood, ood_of, threshold_for, with_ood_output


def clusters(n: int, rng: np.random.Generator, dims: int = 16) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 3, n)
    centres = rng.normal(0, 4, (3, dims))
    return centres[labels] + rng.normal(0, 1, (n, dims)), labels


def test_far_embeddings_score_far_above_the_threshold() -> None:
    rng = np.random.default_rng(0)
    x, y = clusters(600, rng)
    fit = fit_ood(x[:500], y[:500], dims=8)
    held = fit.scores(x[500:])
    threshold = threshold_for(held, flagged=0.01)
    assert (held > threshold).mean() <= 0.02
    assert np.median(held) == pytest.approx(1.0, rel=0.35)  # per-dimension distance: about 1 inside
    far = fit.scores(rng.normal(0, 1, (50, 16)) * 3 + 25)
    assert (far > threshold).all()


def test_the_model_output_is_the_reference_score(tmp_path: Path) -> None:
    model = keras.saving.load_model(make_tiny_model(tmp_path / "tiny") / "model.keras", compile=False)
    images = np.random.default_rng(1).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    embeddings = predict(embedding_model(model), images)
    fit = fit_ood(embeddings[:30], np.arange(30) % 3, dims=4)
    both = with_ood_output(model, fit)
    np.testing.assert_allclose(predict(both, images[30:], output=1).ravel(), fit.scores(embeddings[30:]),
                               rtol=1e-3)
    np.testing.assert_allclose(predict(both, images[30:]), predict(model, images[30:]),
                               atol=1e-6)  # same answer
    saved = tmp_path / "with-ood.keras"
    both.save(saved)
    recovered = ood_of(keras.saving.load_model(saved, compile=False))
    assert recovered is not None
    np.testing.assert_allclose(recovered.scores(embeddings), fit.scores(embeddings), rtol=1e-4)
    assert ood_of(model) is None
