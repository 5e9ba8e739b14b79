"""`train` and `evaluate` as a user runs them, on the committed fixture images.

`evaluate` runs on a tiny untrained artifact (seconds); the training smoke run traces the full
Lite0 gradient graph, which takes 30-90 s on 2 CPU cores, so it is marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shared.manifest import ModelManifest
from shared.operating_policy import OperatingPolicy
from trainer_service.commands.cli import evaluate_main, operating_policy_of, train_main, train_parser
from trainer_service.ml.artifacts import load_artifact, save_artifact
from trainer_service.ml.backbones import efficientnet_lite0
from trainer_service.ml.network import build_classifier

HAM = ["actinic_keratosis", "basal_cell_carcinoma", "benign_keratosis", "dermatofibroma",
       "melanocytic_nevi", "melanoma", "vascular_lesion"]


@pytest.fixture(scope="module")
def untrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init 32x32 artifact for the seven HAM10000 classes."""
    out = tmp_path_factory.mktemp("artifacts") / "untrained"
    model = build_classifier(efficientnet_lite0((32, 32)), len(HAM))
    save_artifact(model, ModelManifest(version="untrained", classes=HAM, input_size=(32, 32)), out)
    return out


def test_evaluate_prints_and_writes_metrics(
    untrained: Path, ham_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate_main([str(untrained), str(ham_root), "--json", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    assert "balanced accuracy" in printed and "confusion matrix" in printed
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["images"] == 28 and metrics["model_version"] == "untrained"
    assert np.sum(metrics["confusion_matrix"]) == 28
    assert np.trace(metrics["confusion_matrix"]) == round(metrics["accuracy"] * 28)
    assert 0.0 <= metrics["balanced_accuracy"] <= 1.0 and 0.0 <= metrics["macro_auc_ovr"] <= 1.0
    assert [row["support"] for row in metrics["per_class"].values()] == [4] * 7


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_writes_a_versioned_artifact(trained: Path, ham_root: Path) -> None:
    manifest = ModelManifest.model_validate_json((trained / "manifest.json").read_text())
    assert manifest.version == "smoke-1"
    folders = {p.name for p in ham_root.iterdir() if p.is_dir()}
    assert manifest.classes == sorted(folders | {"seborrheic_keratosis"})
    assert manifest.parents == {"seborrheic_keratosis": "benign_keratosis"}
    assert tuple(manifest.input_size) == (32, 32) and manifest.backbone == "efficientnet_lite0"
    sources = manifest.training_data["sources"]
    assert set(sources) == {"ham10000", "isic2017"} and manifest.training_data["images"] == 28 + 32 - sum(
        s["validation"]["images"] for s in sources.values())
    for figures in manifest.metrics["validation"].values():
        assert {"balanced_accuracy", "ece", "ece_uncalibrated", "confusion_matrix"} <= figures.keys()
    assert "isic2017/isic2017" in manifest.metrics["eval"]
    assert manifest.ood is not None and manifest.uncertainty is not None
    # no option given: the operating policy's targets, recorded
    assert OperatingPolicy.recorded(manifest.recipe) == OperatingPolicy()
    assert manifest.recipe["ood_flagged"] == 0.02 and manifest.recipe["uncertain_below_accuracy"] == 0.9
    assert manifest.ood.flagged == 0.02 and manifest.uncertainty.target_accuracy == 0.9
    assert all(point.target_recall == 0.80 for point in manifest.referral.values())
    assert [row["epoch"] for row in manifest.history] == [1, 2]
    model, _ = load_artifact(trained)
    probs, ood = model(np.zeros((2, 32, 32, 3), np.float32))
    np.testing.assert_allclose(np.asarray(probs).sum(axis=1), 1.0, atol=1e-5)
    assert np.asarray(ood).shape == (2, 1)
    assert model.get_layer("temperature").scale == pytest.approx(1.0 / manifest.temperature)
    checkpoint = trained.with_name(trained.name + ".work") / "checkpoint" / "state.json"
    assert checkpoint.is_file()  # the same command would resume from here


def test_train_refuses_to_overwrite(untrained: Path, ham_root: Path) -> None:
    assert train_main([str(ham_root), "--out", str(untrained)]) == 2


def test_train_refuses_to_average_more_epochs_than_it_trains(
    ham_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    assert train_main([str(ham_root), "--out", str(out), "--epochs", "2", "--average-last", "3"]) == 2
    assert "average_last must be 0-2" in capsys.readouterr().err


def test_train_takes_its_targets_from_the_operating_policy_and_refuses_one_out_of_bounds(
    ham_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    defaults = train_parser().parse_args([str(ham_root), "--out", str(tmp_path / "m")])
    assert operating_policy_of(defaults) == OperatingPolicy()
    asked = train_parser().parse_args([str(ham_root), "--out", str(tmp_path / "m"),
                                       "--referral-recall", "0.9", "--ood-flagged", "0.05",
                                       "--uncertain-below-accuracy", "0.8"])
    assert operating_policy_of(asked) == OperatingPolicy(referral_recall=0.9, ood_flagged=0.05,
                                                         uncertain_below_accuracy=0.8)
    assert train_main([str(ham_root), "--out", str(tmp_path / "m"), "--referral-confidence", "0.3"]) == 2
    assert "--referral-confidence: Input should be greater than or equal to 0.5" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def _continue(trained: Path, out: Path, *extra: str) -> int:
    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    return train_main([
        str(fixtures / "ham10000"), str(fixtures / "isic2017"), "--out", str(out), "--version", "smoke-2",
        "--input-size", "32", "32", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "8",
        "--warmup-steps", "1", "--learning-rate", "1e-12", "--init-from", str(trained), *extra,
    ])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_init_from_continues_a_trained_network(trained: Path, tmp_path: Path) -> None:
    assert _continue(trained, tmp_path / "more", "--validation-fraction", "0.25") == 0
    manifest = ModelManifest.model_validate_json((tmp_path / "more" / "manifest.json").read_text())
    assert manifest.parent_version == "smoke-1" and manifest.recipe["init_from"] == "smoke-1"
    before, before_manifest = load_artifact(trained)
    after, _ = load_artifact(tmp_path / "more")
    # a learning rate of ~0 leaves the network as it was: the head is the trained one, not a new fit
    kernel, bias = before.get_layer("logits").get_weights()
    np.testing.assert_allclose(after.get_layer("logits").get_weights()[0], kernel, atol=1e-6)
    np.testing.assert_allclose(
        after.get_layer("logits").get_weights()[1] - np.asarray(manifest.class_bias),
        bias - np.asarray(before_manifest.class_bias), atol=1e-5)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_init_from_refuses_another_validation_split(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _continue(trained, tmp_path / "other", "--validation-fraction", "0.5") == 2
    assert "validation fractions" in capsys.readouterr().err
    assert not (tmp_path / "other" / "model.keras").exists()
