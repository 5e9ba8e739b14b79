"""`python -m trainer_service soup`: the greedy mean of trained networks of one lineage, made a
model version; refused for networks validated on another split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from shared.manifest import ModelManifest
from trainer_service.__main__ import main
from trainer_service.commands.soup import greedy_soup, mean_weights
from trainer_service.ml.artifacts import load_artifact


def test_mean_weights_averages_each_array_and_keeps_its_dtype() -> None:
    a: list[np.ndarray] = [np.array([1.0, 2.0], np.float32), np.array([[4]], np.int64)]
    b: list[np.ndarray] = [np.array([3.0, 6.0], np.float32), np.array([[8]], np.int64)]
    mean = mean_weights([a, b])
    np.testing.assert_array_equal(mean[0], [2.0, 4.0])
    assert mean[0].dtype == np.float32 and mean[1].dtype == np.int64 and mean[1][0, 0] == 6


def test_greedy_soup_keeps_only_the_ingredients_that_do_not_lower_the_score() -> None:
    target = 2.0
    ranked = [[np.array([1.0])], [np.array([3.0])], [np.array([10.0])], [np.array([2.0])]]

    def score(weights: list[np.ndarray]) -> float:  # best when the soup's one weight is 2
        return -abs(float(weights[0][0]) - target)

    kept, value = greedy_soup(ranked, score, lambda _: None)
    # 1 alone: -1; with 3: mean 2, score 0 (kept); with 10: mean 4.67 (left out); with 2: mean 2 (kept)
    assert kept == [0, 1, 3] and value == 0.0


def _copy_as(trained: Path, out: Path, version: str, **recipe: object) -> Path:
    shutil.copytree(trained, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["version"] = version
    manifest["recipe"].update(recipe)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_soup_of_networks_validated_on_other_splits_is_refused(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = _copy_as(trained, tmp_path / "other", "smoke-other", validation_fraction=[0.5])
    assert main(["soup", str(trained), str(other), "--out", str(tmp_path / "soup"), "--version", "s"]) == 2
    assert "cannot average smoke-other with smoke-1: validation fractions" in capsys.readouterr().err
    assert not (tmp_path / "soup").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_soup_is_a_calibrated_model_version_with_its_ingredients(trained: Path, tmp_path: Path) -> None:
    twin = _copy_as(trained, tmp_path / "twin", "smoke-twin")
    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    out = tmp_path / "soup"
    assert main(["soup", str(trained), str(twin), "--out", str(out), "--version", "smoke-soup",
                 "--eval-data", str(fixtures / "isic2017")]) == 0

    manifest = ModelManifest.model_validate_json((out / "manifest.json").read_text())
    assert manifest.recipe["kind"] == "soup"
    assert sorted(manifest.recipe["ingredients"]) == ["smoke-1", "smoke-twin"]  # equal scores: both kept
    assert manifest.parent_version in ("smoke-1", "smoke-twin")
    assert manifest.ood is not None and manifest.uncertainty is not None  # (too few cases for referral)
    assert "isic2017/isic2017" in manifest.metrics["eval"]
    # the mean of a network and its copy is that network: the logits layer's kernel is unchanged
    soup_model, _ = load_artifact(out)
    before, _ = load_artifact(trained)
    np.testing.assert_allclose(soup_model.get_layer("logits").get_weights()[0],
                               before.get_layer("logits").get_weights()[0], atol=1e-6)
