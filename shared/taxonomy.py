"""The DermaScan label taxonomy: one place that names every condition the system knows."""

from __future__ import annotations

import re

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
