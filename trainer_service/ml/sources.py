"""Training data from several sources (HAM10000, ISIC 2017, ...), decoded once and cached.

A source is a class-per-folder root (`.../ham10000/train`); its name is the folder above a
`train`/`eval`/`val` root, else the root's own name. Every source is decoded onto one class list
(the union of their folders), split into fit and validation parts by lesion where ids exist,
and its decoded pixels are cached as `.npy` keyed by what they depend on (files, size, policy),
so a resumed run starts in seconds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer_service.ml.dataset import ImageSet, find_classes, grouped_split, load_image_set

SPLIT_NAMES = frozenset({"train", "eval", "val", "test"})


@dataclass(frozen=True)
class Source:
    """One source's images: the part training fits on and the part that validates it."""

    name: str
    fit: ImageSet
    validation: ImageSet


def source_name(root: Path) -> str:
    """'ham10000' for `.../ham10000/train`, the folder's own name otherwise."""
    root = root.resolve()
    return root.parent.name if root.name in SPLIT_NAMES else root.name


def union_classes(roots: list[Path]) -> tuple[str, ...]:
    """Sorted class names found in any of `roots` (see `find_classes`)."""
    return tuple(sorted({name for root in roots for name in find_classes(root)}))


def _cache_key(root: Path, size: tuple[int, int], classes: tuple[str, ...], policy: str) -> str:
    listing = sorted(
        f"{p.relative_to(root)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
        for name in classes if (root / name).is_dir() for p in (root / name).iterdir() if p.is_file()
    )
    blob = json.dumps([str(root.resolve()), list(size), list(classes), policy, listing])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cached_image_set(root: Path, size: tuple[int, int], classes: tuple[str, ...], policy: str,
                     cache_dir: Path | None) -> ImageSet:
    """`load_image_set(root, ...)`, read from `cache_dir` when decoded before with the same inputs."""
    if cache_dir is None:
        return load_image_set(root, size, classes=classes, policy=policy)
    key = _cache_key(root, size, classes, policy)
    pixels, meta = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if pixels.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        return ImageSet(np.load(pixels), np.asarray(info["labels"], np.int32), classes, tuple(info["files"]),
                        tuple(info["sha256"]), tuple(info["groups"]))
    data = load_image_set(root, size, classes=classes, policy=policy)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(pixels.with_suffix(".tmp.npy"), data.images)
    pixels.with_suffix(".tmp.npy").replace(pixels)
    meta.write_text(json.dumps({"labels": data.labels.tolist(), "files": data.files, "sha256": data.sha256,
                                "groups": data.groups}))
    return data


def per_source(fractions: list[float], sources: int) -> list[float]:
    """One held-out share per source: `fractions` as given, or its first value for every source."""
    return fractions if len(fractions) == sources else fractions[:1] * sources


def recorded_split_seed(recipe: dict[str, Any]) -> int:
    """The validation split's seed a manifest's recipe records: its split seed, else its seed."""
    return int(recipe["split_seed"] if recipe.get("split_seed") is not None else recipe.get("seed", 0))


def load_sources(roots: list[Path], size: tuple[int, int], *, policy: str, fractions: list[float], seed: int,
                 cache_dir: Path | None) -> tuple[tuple[str, ...], list[Source]]:
    """(classes, sources): every root decoded onto the union of classes and split for validation.

    `fractions` gives each root's held-out share (one value applies to all). Raises
    FileNotFoundError for a missing or empty root and ValueError for a name used twice.
    """
    classes = union_classes(roots)
    shares = per_source(fractions, len(roots))
    sources: list[Source] = []
    for root, share in zip(roots, shares, strict=True):
        data = cached_image_set(root, size, classes, policy, cache_dir)
        fit, held = grouped_split(data, share, seed)
        sources.append(Source(source_name(root), data.subset(fit), data.subset(held)))
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"two sources share a name: {names}")
    return classes, sources


def combined(sources: list[Source]) -> tuple[ImageSet, np.ndarray]:
    """All sources' fit images as one set, and each image's stratum (source * classes + label)."""
    parts = [s.fit for s in sources]
    k = len(parts[0].classes)
    strata = np.concatenate([i * k + p.labels for i, p in enumerate(parts)]).astype(np.int64)
    merged = ImageSet(
        np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
        parts[0].classes,
        tuple(f"{s.name}/{f}" for s in sources for f in s.fit.files),
        tuple(h for p in parts for h in p.sha256),
        tuple(f"{s.name}/{g}" for s in sources for g in s.fit.groups),
    )
    return merged, strata
