"""Class names from file names, as the seed project's bulk upload did it."""

from __future__ import annotations

import pytest

from shared.taxonomy import CLASSES, class_from_filename


def test_taxonomy_is_the_seed_eleven_plus_ham10000() -> None:
    assert len(CLASSES) == 14
    assert {"actinic_keratosis", "dermatofibroma", "vascular_lesion", "acne", "warts"} <= set(CLASSES)


@pytest.mark.parametrize(
    "name,label",
    [
        ("melanoma_0001.jpg", "melanoma"),
        ("basal_cell_carcinoma-12.png", "basal_cell_carcinoma"),
        ("Seborrheic_Keratosis.webp", "seborrheic_keratosis"),
        ("../../melanoma_x.jpg", "melanoma"),
        ("melanocytic_nevi_3.jpg", "melanocytic_nevi"),
        ("melanomas.jpg", None),
        ("lupus_1.jpg", None),
        ("melanoma", None),
    ],
)
def test_class_from_filename(name: str, label: str | None) -> None:
    assert class_from_filename(name) == label
