"""Class-per-folder image datasets, decoded once with the shared preprocessing.

A dataset root holds one folder per class (`<root>/<class>/<image>.jpg`); the folder names,
sorted, are the classes. A `metadata.csv` (HAM10000 style: `image_id`, `lesion_id`) in the root
or its parent names the lesion each image shows, so splits can keep a lesion on one side.
Every image goes through `shared.imaging.load_for_model`, the function the inference worker
uses, so training sees exactly the pixels serving will see.
"""

from __future__ import annotations

import csv
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.imaging import DEFAULT_POLICY, load_for_model

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})


@dataclass(frozen=True)
class ImageSet:
    """Decoded images with labels: `images` uint8 (n, h, w, 3), `labels` int32 indices into `classes`."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    files: tuple[str, ...]
    sha256: tuple[str, ...]
    groups: tuple[str, ...]

    def subset(self, index: np.ndarray) -> ImageSet:
        """The images at `index`, same classes."""
        pick = [int(i) for i in index]
        return ImageSet(
            self.images[index],
            self.labels[index],
            self.classes,
            tuple(self.files[i] for i in pick),
            tuple(self.sha256[i] for i in pick),
            tuple(self.groups[i] for i in pick),
        )

    def counts(self) -> dict[str, int]:
        """Images per class, every class listed."""
        found = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, found, strict=True)}


def find_classes(root: Path) -> tuple[str, ...]:
    """Sorted names of the class folders of `root` that hold at least one image.

    Raises FileNotFoundError if `root` is not a directory or holds no class folder with images.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    classes = tuple(
        sorted(d.name for d in root.iterdir() if d.is_dir() and any(_images_in(d)))
    )
    if not classes:
        raise FileNotFoundError(f"{root} holds no class folders with images")
    return classes


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_lesion_ids(root: Path) -> dict[str, str]:
    """image_id -> lesion_id from `metadata.csv` in `root` or its parent; empty if none."""
    for candidate in (root / "metadata.csv", root.parent / "metadata.csv"):
        if candidate.is_file():
            with candidate.open(newline="") as fh:
                return {
                    row["image_id"]: row["lesion_id"]
                    for row in csv.DictReader(fh)
                    if row.get("image_id") and row.get("lesion_id")
                }
    return {}


def load_image_set(
    root: Path,
    size: tuple[int, int],
    *,
    classes: tuple[str, ...] | None = None,
    policy: str = DEFAULT_POLICY,
    workers: int = 2,
) -> ImageSet:
    """Decode every image under `root` to `size` (height, width) with `load_for_model` and the
    preprocessing `policy` of the model being trained or evaluated.

    `classes` fixes the label order (a model's classes); folders not in it are skipped and
    classes without a folder simply have no images. Default: the folders found. An image
    without a lesion id is its own group. Raises FileNotFoundError (see `find_classes`) and
    shared.errors.BadRequest for an undecodable image.
    """
    order = classes if classes is not None else find_classes(root)
    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(order):
        folder = root / name
        if folder.is_dir():
            found = _images_in(folder)
            paths += found
            labels += [index] * len(found)
    if not paths:
        raise FileNotFoundError(f"no images of classes {order} under {root}")
    blobs = [p.read_bytes() for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(lambda b: load_for_model(b, size, policy=policy), blobs))
    lesions = read_lesion_ids(root)
    return ImageSet(
        images=np.stack(images),
        labels=np.asarray(labels, dtype=np.int32),
        classes=tuple(order),
        files=tuple(str(p.relative_to(root)) for p in paths),
        sha256=tuple(hashlib.sha256(b).hexdigest() for b in blobs),
        groups=tuple(lesions.get(p.stem, p.stem) for p in paths),
    )


def grouped_split(data: ImageSet, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices (train, held_out) with about `fraction` of each class's groups held out.

    A group (lesion) falls wholly on one side. Each class with at least two groups keeps at
    least one on each side. Deterministic for a given `seed`.
    """
    rng = np.random.default_rng(seed)
    groups = np.asarray(data.groups)
    held: list[str] = []
    for label in range(len(data.classes)):
        names = np.unique(groups[data.labels == label])
        rng.shuffle(names)
        if len(names) >= 2:
            held += list(names[: max(1, round(fraction * len(names)))])
    held_mask = np.isin(groups, np.asarray(held))
    return np.flatnonzero(~held_mask), np.flatnonzero(held_mask)


def data_summary(data: ImageSet) -> dict[str, object]:
    """Counts per class and one SHA-256 over the sorted image hashes: the data snapshot."""
    digest = hashlib.sha256("\n".join(sorted(data.sha256)).encode()).hexdigest()
    return {"images": len(data.files), "counts": data.counts(), "images_sha256": digest}
