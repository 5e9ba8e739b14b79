"""The DermaScan label taxonomy: one place that names every condition the system knows."""

from __future__ import annotations

import re

import numpy as np

#: The seed project's eleven conditions plus the three HAM10000 adds, sorted by name.
CLASSES: tuple[str, ...] = (
    "acne",
    "actinic_keratosis",
    "basal_cell_carcinoma",
    "benign_keratosis",
    "dermatofibroma",
    "eczema",
    "fungal",
    "melanocytic_nevi",
    "melanoma",
    "normal",
    "psoriasis",
    "seborrheic_keratosis",
    "vascular_lesion",
    "warts",
)

#: HAM10000's `dx` codes mapped onto our class names.
HAM10000_DX: dict[str, str] = {
    "akiec": "actinic_keratosis",
    "bcc": "basal_cell_carcinoma",
    "bkl": "benign_keratosis",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic_nevi",
    "vasc": "vascular_lesion",
}

_BY_LENGTH = sorted(CLASSES, key=len, reverse=True)
_SEPARATORS = re.compile(r"[_\-.]")


def is_known(label: str) -> bool:
    """True when `label` is a class of the taxonomy (exact, lower-case name)."""
    return label in CLASSES


def class_from_filename(filename: str) -> str | None:
    """The class a file name starts with, or None.

    The longest taxonomy name that prefixes the base name (case-insensitive) and is followed
    by `_`, `-` or `.` wins: `basal_cell_carcinoma-12.png` -> `basal_cell_carcinoma`.
    Directory parts are ignored, so `../../melanoma_x.jpg` is plain `melanoma`.
    """
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].lower()
    for name in _BY_LENGTH:
        if base.startswith(name) and len(base) > len(name) and _SEPARATORS.match(base[len(name)]):
            return name
    return None


#: A class's parent when one dataset labels a disease at a finer level than another: HAM10000's
#: `benign_keratosis` (bkl) includes seborrheic keratoses, which ISIC 2017 labels on their own.
PARENTS: dict[str, str] = {"seborrheic_keratosis": "benign_keratosis"}


def parent_of(label: str) -> str | None:
    """The class `label` is a kind of, or None for a top-level class."""
    return PARENTS.get(label)


def covers(label: str, leaf: str, parents: dict[str, str] | None = None) -> bool:
    """True when an image labelled `label` may truly be a `leaf`: the same class or a descendant.

    A `benign_keratosis` image may be a seborrheic keratosis; a seborrheic keratosis image is
    never some other benign keratosis.
    """
    links = PARENTS if parents is None else parents
    node: str | None = leaf
    while node is not None:
        if node == label:
            return True
        node = links.get(node)
    return False


def admissible(classes: tuple[str, ...] | list[str]) -> np.ndarray:
    """(k, k) 0/1 matrix: row = a label, columns = the model outputs that label admits (`covers`).

    Training maximises the summed probability of a label's admissible outputs, so a parent-level
    label is no evidence against its children; evaluation counts such a prediction as right.
    """
    return np.array([[1.0 if covers(label, leaf) else 0.0 for leaf in classes] for label in classes])


def roll_up(probabilities: dict[str, float], parents: dict[str, str] | None = None) -> dict[str, float]:
    """Each class's probability including its descendants' (a parent's mass is its own plus its
    children's): {'benign_keratosis': .1, 'seborrheic_keratosis': .3} -> bkl .4, sk .3.
    `parents` defaults to `PARENTS` (a model's manifest records the links it was trained with)."""
    return {label: sum(p for leaf, p in probabilities.items() if covers(label, leaf, parents))
            for label in probabilities}


#: Malignant (or pre-malignant) classes that get a referral flag of their own, whatever the top
#: label: melanoma, basal cell carcinoma, actinic keratosis / intraepithelial carcinoma.
MALIGNANT: tuple[str, ...] = ("melanoma", "basal_cell_carcinoma", "actinic_keratosis")
