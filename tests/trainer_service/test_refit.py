"""`python -m trainer_service refit`: operating points chosen again, the network left as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from shared.manifest import ModelManifest
from shared.operating_policy import OperatingPolicy
from tests.support.models import make_tiny_model
from trainer_service.commands.refit import main
from trainer_service.ml.artifacts import load_artifact
from trainer_service.ml.network import LOGITS, logits_model
from trainer_service.ml.ood import OodFit, ood_of, with_ood_output
from trainer_service.ml.sources import load_sources

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SOURCES = [FIXTURES / "ham10000", FIXTURES / "isic2017"]
CLASSES = ("actinic_keratosis", "basal_cell_carcinoma", "benign_keratosis", "dermatofibroma",
           "melanocytic_nevi", "melanoma", "seborrheic_keratosis", "vascular_lesion")


@pytest.fixture
def trained(tmp_path: Path) -> Path:
    """A tiny model as `train` leaves one: class biases in its logits, an OOD branch, a recipe."""
    directory = make_tiny_model(tmp_path / "old", classes=CLASSES, version="old-v1")
    model = keras.saving.load_model(directory / "model.keras", compile=False)
    rng = np.random.default_rng(0)
    dims = model.get_layer("embedding").output.shape[-1]
    fit = OodFit(offset=rng.normal(size=4).astype(np.float32),
                 projection=rng.normal(size=(dims, 4)).astype(np.float32),
                 centres=rng.normal(size=(len(CLASSES), 4)).astype(np.float32))
    dense = model.get_layer(LOGITS)
    kernel, bias = dense.get_weights()
    class_bias = np.linspace(-1, 1, len(CLASSES)).astype(np.float32)
    dense.set_weights([kernel, bias + class_bias])
    shutil.rmtree(directory)
    directory.mkdir()
    with_ood_output(model, fit).save(directory / "model.keras")
    manifest = ModelManifest(version="old-v1", classes=list(CLASSES), input_size=(32, 32),
                             backbone="tiny-cnn",
                             class_bias=class_bias.tolist(),
                             recipe={"sources": [str(p) for p in SOURCES], "validation_fraction": [0.5],
                                     "seed": 0, "split_seed": None})
    (directory / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    return directory


def test_refit_keeps_the_network_and_the_detector_and_fits_new_points(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "new"
    assert main([str(trained), "--out", str(out), "--version", "new-v1", "--threads", "1",
                 "--uncertain-below-accuracy", "0.8"]) == 0

    old_model, old = load_artifact(trained)
    new_model, new = load_artifact(out)
    assert (new.version, new.parent_version) == ("new-v1", "old-v1")
    assert new.recipe["operating_points_refit_from"] == "old-v1"
    # today's policy but for the target asked for, recorded and fitted to
    assert OperatingPolicy.recorded(new.recipe) == OperatingPolicy(uncertain_below_accuracy=0.8)
    assert new.uncertainty is not None and new.uncertainty.target_accuracy == 0.8
    assert set(new.metrics) == {"validation"} and set(new.metrics["validation"]) == {"ham10000", "isic2017"}

    _, sources = load_sources(SOURCES, (32, 32), policy=old.preprocessing, fractions=[0.5], seed=0,
                              cache_dir=None)
    images = np.concatenate([s.validation.images for s in sources]).astype(np.float32)
    # the same network: logits differ only by the change of class biases
    shift = np.asarray(new.class_bias) - np.asarray(old.class_bias)
    np.testing.assert_allclose(logits_model(new_model).predict(images, verbose=0),
                               logits_model(old_model).predict(images, verbose=0) + shift, atol=1e-4)
    # the same out-of-distribution scores, from the carried-over branch
    np.testing.assert_allclose(new_model.predict(images, verbose=0)[1],
                               old_model.predict(images, verbose=0)[1], rtol=1e-5, atol=1e-5)
    fit_old, fit_new = ood_of(old_model), ood_of(new_model)
    assert fit_old is not None and fit_new is not None
    np.testing.assert_array_equal(fit_new.centres, fit_old.centres)
    # the detector's threshold set again on validation, to flag the share asked for
    assert new.ood is not None and new.ood.flagged == OperatingPolicy().ood_flagged and new.ood.dims == 4
    flagged = np.mean([share for share in new.ood.validation_flagged.values()])
    assert 0 < flagged <= 0.2  # 2 % of 30 validation images: at most one or two per source
    # calibrated probabilities at the new temperature
    probabilities = new_model.predict(images, verbose=0)[0]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_refit_refuses_an_existing_directory_and_a_recipe_without_a_split(trained: Path,
                                                                          tmp_path: Path) -> None:
    assert main([str(trained), "--out", str(trained), "--version", "x"]) == 2
    manifest = ModelManifest.model_validate_json((trained / "manifest.json").read_text())
    (trained / "manifest.json").write_text(manifest.model_copy(update={"recipe": {}}).model_dump_json())
    with pytest.raises(ValueError, match="validation split"):
        main([str(trained), "--out", str(tmp_path / "x"), "--version", "x"])
