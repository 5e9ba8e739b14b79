"""Fixtures for trainer tests: the committed HAM10000 sample (4 eval images per class), and a
tiny model trained on both committed fixture sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer_service.ml.dataset import ImageSet, load_image_set

HAM_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ham10000"


@pytest.fixture(scope="session")
def ham_root() -> Path:
    """Class-per-folder fixture dataset with its metadata.csv (28 images, 7 classes)."""
    return HAM_FIXTURES


@pytest.fixture(scope="session")
def ham_small(ham_root: Path) -> ImageSet:
    """The fixture images decoded at 32x32."""
    return load_image_set(ham_root, (32, 32))


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32x32 model trained for two one-step epochs on both committed fixture sources (the
    full Lite0 gradient graph: 30-90 s on 2 cores, so only slow tests ask for it)."""
    from trainer_service.commands.cli import train_main

    out = tmp_path_factory.mktemp("runs") / "smoke"
    fixtures = HAM_FIXTURES.parent
    status = train_main([
        str(fixtures / "ham10000"), str(fixtures / "isic2017"), "--out", str(out), "--version", "smoke-1",
        "--input-size", "32", "32", "--epochs", "2", "--steps-per-epoch", "1", "--head-epochs", "1",
        "--batch-size", "8", "--validation-fraction", "0.25", "--warmup-steps", "1",
        "--eval-data", str(fixtures / "isic2017"),
    ])
    assert status == 0
    return out
