"""The class hierarchy: a seborrheic keratosis is a kind of benign keratosis, and probabilities roll up."""

from __future__ import annotations

import numpy as np

from shared.taxonomy import CLASSES, MALIGNANT, PARENTS, admissible, covers, parent_of


def test_seborrheic_keratosis_is_a_benign_keratosis() -> None:
    assert parent_of("seborrheic_keratosis") == "benign_keratosis"
    assert parent_of("melanoma") is None
    assert covers("benign_keratosis", "seborrheic_keratosis")
    assert not covers("seborrheic_keratosis", "benign_keratosis")
    assert covers("melanoma", "melanoma") and not covers("melanoma", "melanocytic_nevi")


def test_every_link_joins_two_classes_of_the_taxonomy() -> None:
    assert all(child in CLASSES and parent in CLASSES for child, parent in PARENTS.items())
    assert set(MALIGNANT) <= set(CLASSES)


def test_admissible_rows_are_a_label_and_its_descendants() -> None:
    classes = ("benign_keratosis", "melanoma", "seborrheic_keratosis")
    np.testing.assert_array_equal(admissible(classes), [[1, 0, 1], [0, 1, 0], [0, 0, 1]])


def test_a_parent_whose_mass_is_split_with_its_child_still_wins() -> None:
    from shared.taxonomy import admissible_for, decide

    classes = ("benign_keratosis", "melanocytic_nevi", "seborrheic_keratosis")
    p = np.array([[0.30, 0.40,
                   0.30],   # keratosis 0.6 in all beats the nevus; the child is not above the parent
                  [0.20, 0.40, 0.40],   # keratosis 0.6; the child holds more than the parent's own
                  [0.05, 0.80, 0.15]])  # a nevus
    assert [classes[i] for i in decide(p, admissible(classes))] == [
        "benign_keratosis", "seborrheic_keratosis", "melanocytic_nevi"]
    assert list(decide(p, admissible_for(classes, {}))) == [1, 1, 1]  # without the link, plain argmax
