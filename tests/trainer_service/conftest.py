"""Fixtures for trainer tests: the committed HAM10000 sample (4 eval images per class)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer_service.dataset import ImageSet, load_image_set

HAM_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ham10000"


@pytest.fixture(scope="session")
def ham_root() -> Path:
    """Class-per-folder fixture dataset with its metadata.csv (28 images, 7 classes)."""
    return HAM_FIXTURES


@pytest.fixture(scope="session")
def ham_small(ham_root: Path) -> ImageSet:
    """The fixture images decoded at 32x32."""
    return load_image_set(ham_root, (32, 32))
