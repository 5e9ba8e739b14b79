"""tools/logit_study.py on saved logits: temperature rules fitted on validation only, and an
ensemble whose figures are those of the mean of the two models' probabilities."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import logit_study

CLASSES = np.array(["melanocytic_nevi", "melanoma", "seborrheic_keratosis"])


def _study(path: Path, seed: int, sharpness: float) -> Path:
    """Logits whose labels are drawn from softmax(logits): calibrated at T = sharpness."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for name, n in (("val_a", 400), ("val_b", 300), ("eval_a", 2000)):
        base = rng.normal(0, 2, (n, 3))
        labels = np.array([rng.choice(3, p=np.exp(r) / np.exp(r).sum()) for r in base])
        arrays[f"{name}.logits"] = base * sharpness + rng.normal(0, 0.1, base.shape)
        arrays[f"{name}.labels"] = labels
        arrays[f"{name}.ood"] = rng.normal(1, 0.3, n)
    np.savez(path, classes=CLASSES, temperature=1.0, **arrays)  # type: ignore[arg-type]
    return path


def test_temperature_rules_recover_the_temperature_the_logits_were_made_with(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logit_study.temperatures(_study(tmp_path / "s.npz", 0, sharpness=2.0))
    lines = capsys.readouterr().out.splitlines()
    own = next(line for line in lines if "model's own" in line)
    fitted = next(line for line in lines if "fitted on val_a" in line)
    log_t = float(re.search(r"\(a (-?[0-9.]+),", fitted).group(1))  # type: ignore[union-attr]
    assert "(a 0.000," in own and 0.45 < log_t < 1.0  # log 2 = 0.69 (0.66-0.86 over seeds), on 400 logits

    def eval_ece(line: str) -> float:
        return float(line.split("eval_a ", 1)[1].split(",")[0])

    assert eval_ece(fitted) < eval_ece(own) / 1.5  # on 2,000 held-out logits the floor is about 0.03


def test_the_ensemble_of_a_model_with_itself_is_that_model(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = _study(tmp_path / "s.npz", 1, sharpness=1.0)
    logit_study.ensemble([path, path, path])
    out = capsys.readouterr().out.split("\n  ")
    assert out[1].split(": ", 1)[1] == out[4].split(": ", 1)[1].split("\n")[0]


def test_studies_of_different_images_are_refused(tmp_path: Path) -> None:
    first = _study(tmp_path / "a.npz", 2, sharpness=1.0)
    data = dict(np.load(first))
    data["val_a.labels"] = np.roll(data["val_a.labels"], 1)
    np.savez(tmp_path / "b.npz", **data)
    with pytest.raises(SystemExit, match="different images"):
        logit_study.ensemble([first, tmp_path / "b.npz"])


def test_patient_metadata_is_credited_only_when_it_carries_the_label(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Uninformative logits, and ages that tell melanoma apart: the stack with age must win."""
    rng = np.random.default_rng(3)
    arrays: dict[str, np.ndarray] = {}
    rows = ["sha256,age,sex"]
    for name, n in (("val_a", 300), ("eval_a", 300)):
        labels = rng.integers(0, 3, n)
        digests = [f"{name}-{i}" for i in range(n)]
        arrays[f"{name}.logits"] = rng.normal(0, 1, (n, 3))
        arrays[f"{name}.labels"], arrays[f"{name}.ood"] = labels, rng.normal(1, 0.3, n)
        arrays[f"{name}.sha256"] = np.array(digests)
        rows += [f"{d},{70 if y == 1 else 30},{'male' if i % 2 else 'female'}"
                 for i, (d, y) in enumerate(zip(digests, labels, strict=True))]
    np.savez(tmp_path / "s.npz", classes=CLASSES, temperature=1.0, **arrays)  # type: ignore[arg-type]
    (tmp_path / "metadata.csv").write_text("\n".join(rows) + "\n")
    logit_study.metadata(tmp_path / "s.npz", [tmp_path / "metadata.csv"])
    out = capsys.readouterr().out
    alone, with_age = (block.split("eval_a: ")[1].split("\n")[0] for block in out.split("stacked on")[1:])

    def melanoma_auc(line: str) -> float:
        return float(line.split("melanoma AUC ")[1])

    assert melanoma_auc(alone) < 0.65 and melanoma_auc(with_age) > 0.95
