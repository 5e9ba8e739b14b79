"""The DermaScan label taxonomy: one place that names every condition the system knows."""

from __future__ import annotations

import functools
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
    return admissible_for(classes, PARENTS)


#: Malignant (or pre-malignant) classes that get a referral flag of their own, whatever the top
#: label: melanoma, basal cell carcinoma, actinic keratosis / intraepithelial carcinoma.
MALIGNANT: tuple[str, ...] = ("melanoma", "basal_cell_carcinoma", "actinic_keratosis")


def decide(probabilities: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The answer for each row of model outputs (n, k): an output index. `allowed` is the
    `admissible` matrix of the outputs' classes (or of a model's own `parents`).

    The most probable top-level class by rolled-up probability (a parent's own mass plus its
    children's, so a lesion split between "benign keratosis" and "seborrheic keratosis" still
    beats a nevus with more than either alone), then the finest class under it: a child whose
    rolled-up probability exceeds the parent's own output replaces it. Every consumer (the API,
    evaluation, the operating points) answers with this rule; with no links it is the argmax.
    """
    k = allowed.shape[0]
    rolled = probabilities @ allowed.T
    top, children = _hierarchy(allowed.shape, allowed.astype(bool).tobytes())
    chosen: np.ndarray = top[rolled[:, top].argmax(axis=1)]
    for _ in range(k):  # descend one level per pass
        changed = False
        for i, kids in children:
            rows = np.flatnonzero(chosen == i)
            if not len(rows):
                continue
            best = kids[rolled[np.ix_(rows, kids)].argmax(axis=1)]
            finer = rolled[rows, best] > probabilities[rows, i]
            chosen[rows[finer]] = best[finer]
            changed = changed or bool(finer.any())
        if not changed:
            break
    return chosen


@functools.lru_cache(maxsize=64)
def _hierarchy(shape: tuple[int, ...],
               allowed: bytes) -> tuple[np.ndarray, tuple[tuple[int, np.ndarray], ...]]:
    """The outputs `decide` starts from (those no other output covers) and, for each output with
    direct children, the children, of the (k, k) 0/1 matrix `allowed` (as its shape and its bytes
    as bool). Cached: a worker asks once per image with the same matrix, and building this is most
    of the cost of `decide` on one row."""
    links = np.frombuffer(allowed, dtype=bool).reshape(shape)
    k = shape[0]
    covered_by = [[i for i in range(k) if i != j and links[i, j]] for j in range(k)]
    top = np.asarray([j for j in range(k) if not covered_by[j]])
    # direct children: every other ancestor of the child is an ancestor of the parent too
    children = tuple((i, np.asarray(kids)) for i in range(k)
                     if (kids := [j for j in range(k)
                                  if i in covered_by[j] and set(covered_by[j]) - {i} <= set(covered_by[i])]))
    top.flags.writeable = False
    for _, direct in children:
        direct.flags.writeable = False
    return top, children


def admissible_for(classes: tuple[str, ...] | list[str], parents: dict[str, str]) -> np.ndarray:
    """`admissible` under a model's own recorded `parents` links (a manifest's `parents`)."""
    return np.array([[1.0 if covers(label, leaf, parents) else 0.0 for leaf in classes] for label in classes])
