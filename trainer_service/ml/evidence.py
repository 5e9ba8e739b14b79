"""A model version's training evidence: the embeddings, under its backbone, of the images its head
was fitted on, validated on and judged on, with each image's label, source, lesion group and hash.

A head retrain needs them again: it fits the new head on the parent's `fit` rows plus the
catalog's new images, fits the operating points on the parent's `validation` rows plus the
uploads' validation share, and judges the candidate against the served model on the `reference`
rows (held out from both). What it used is saved as the new version's evidence, so the next
retrain appends again. `reserved` lists the hashes of images kept for the figures a model card
reports: no gate or selection may use them.

Stored as one `.npz` (`models/<version>/evidence.npz` in the registry): the vectors quantised to
uint8 per dimension (`offset + scale * q`), which costs nothing measurable in accuracy (see the
model card) and is a quarter of float32.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

ROLES: tuple[str, ...] = ("fit", "validation", "reference")
Role = Literal["fit", "validation", "reference"]
Part = Literal["gate", "report"]


def reference_part(group: str) -> Part:
    """Which half of a public held-out set (HAM10000 `eval/`) a lesion belongs to: the `gate` half
    judges retrains, the `report` half gives the figures a model card shows. Fixed by the lesion
    id alone, so both halves are the same for every model and every reader."""
    return "gate" if int(hashlib.sha256(f"reference:{group}".encode()).hexdigest()[:8], 16) % 2 == 0 \
        else "report"


def _hashes_to_bytes(hashes: list[str] | tuple[str, ...]) -> np.ndarray:
    return np.frombuffer(b"".join(bytes.fromhex(h) for h in hashes), np.uint8).reshape(-1, 32)


@dataclass(frozen=True)
class Evidence:
    """Rows of embeddings with their label, source, role, lesion group and image hash. Immutable."""

    backbone: str
    classes: tuple[str, ...]
    sources: tuple[str, ...]
    vectors: np.ndarray  # uint8 (n, d)
    scale: np.ndarray  # float32 (d,)
    offset: np.ndarray  # float32 (d,)
    labels: np.ndarray  # int16 (n,), indices into classes
    source: np.ndarray  # uint8 (n,), indices into sources
    role: np.ndarray  # uint8 (n,), indices into ROLES
    groups: np.ndarray  # str (n,)
    sha256: np.ndarray  # uint8 (n, 32)
    reserved: np.ndarray  # uint8 (m, 32): hashes no gate or selection may use

    @classmethod
    def build(cls, backbone: str, embeddings: np.ndarray, labels: list[str], sources: list[str],
              roles: list[Role], groups: list[str], sha256: list[str], *,
              reserved: list[str] | tuple[str, ...] = ()) -> Evidence:
        """Evidence from float embeddings and per-row names; the quantisation spans their range."""
        low, high = embeddings.min(axis=0), embeddings.max(axis=0)
        scale = np.maximum(high - low, 1e-6) / 255.0
        classes, names = tuple(sorted(set(labels))), tuple(sorted(set(sources)))
        empty = cls(backbone, classes, names, np.zeros((0, embeddings.shape[1]), np.uint8),
                    scale.astype(np.float32), low.astype(np.float32), np.zeros(0, np.int16),
                    np.zeros(0, np.uint8), np.zeros(0, np.uint8), np.zeros(0, str),
                    np.zeros((0, 32), np.uint8), _hashes_to_bytes(list(reserved)))
        return empty.append(embeddings, labels, sources, roles, groups, sha256)

    def __len__(self) -> int:
        return len(self.labels)

    def append(self, embeddings: np.ndarray, labels: list[str], sources: list[str], roles: list[Role],
               groups: list[str], sha256: list[str]) -> Evidence:
        """These rows added (quantised on this evidence's scale; values outside it are clipped).
        Raises ValueError when the lengths differ or the dimension is not this evidence's."""
        n = len(labels)
        if not (len(embeddings) == len(sources) == len(roles) == len(groups) == len(sha256) == n):
            raise ValueError("every row needs an embedding, label, source, role, group and hash")
        if n and embeddings.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"embeddings of dimension {embeddings.shape[1]}, "
                             f"evidence of {self.vectors.shape[1]}")
        classes = tuple(sorted(set(self.classes) | set(labels)))
        names = tuple(sorted(set(self.sources) | set(sources)))
        relabel = np.array([classes.index(c) for c in self.classes] or [0], np.int16)
        resource = np.array([names.index(s) for s in self.sources] or [0], np.uint8)
        q = np.clip(np.rint((embeddings - self.offset) / self.scale), 0, 255).astype(np.uint8)
        return replace(
            self, classes=classes, sources=names,
            vectors=np.concatenate([self.vectors, q.reshape(n, self.vectors.shape[1])]),
            labels=np.concatenate([relabel[self.labels],
                                   np.array([classes.index(c) for c in labels], np.int16)]),
            source=np.concatenate([resource[self.source],
                                   np.array([names.index(s) for s in sources], np.uint8)]),
            role=np.concatenate([self.role, np.array([ROLES.index(r) for r in roles], np.uint8)]),
            groups=np.concatenate([self.groups, np.asarray(groups, str)]),
            sha256=np.concatenate([self.sha256, _hashes_to_bytes(sha256)]))

    def mask(self, role: Role) -> np.ndarray:
        """Which rows play `role`."""
        rows: np.ndarray = self.role == ROLES.index(role)
        return rows

    def embeddings(self, rows: np.ndarray) -> np.ndarray:
        """The float32 embeddings of `rows` (a mask or indices)."""
        floats: np.ndarray = (self.offset
                              + self.scale * self.vectors[rows].astype(np.float32)).astype(np.float32)
        return floats

    def label_names(self, rows: np.ndarray) -> list[str]:
        """The class name of each of `rows`."""
        return [self.classes[i] for i in self.labels[rows]]

    def source_names(self, rows: np.ndarray) -> np.ndarray:
        """The source name of each of `rows`."""
        return np.asarray(self.sources)[self.source[rows]] if len(self.sources) else np.zeros(0, str)

    def hashes(self) -> set[str]:
        """Every image hash this evidence holds, reserved ones included: what a retrain must not
        add again nor judge on."""
        return {bytes(h).hex() for h in self.sha256} | {bytes(h).hex() for h in self.reserved}

    def summary(self) -> dict[str, dict[str, dict[str, int]]]:
        """Images per role, source and class: what a manifest records."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for (role, source, label), n in sorted(Counter(zip(
                self.role.tolist(), self.source.tolist(), self.labels.tolist(), strict=True)).items()):
            out.setdefault(ROLES[role], {}).setdefault(self.sources[source], {})[self.classes[label]] = n
        return out

    def to_bytes(self) -> bytes:
        """The compressed `.npz` form."""
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer, backbone=np.array(self.backbone), classes=np.array(self.classes, str),
            sources=np.array(self.sources, str), vectors=self.vectors, scale=self.scale, offset=self.offset,
            labels=self.labels, source=self.source, role=self.role, groups=self.groups.astype(str),
            sha256=self.sha256, reserved=self.reserved)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Evidence:
        """Read the `.npz` form; raises ValueError for anything else."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return cls(str(z["backbone"]), tuple(str(c) for c in z["classes"]),
                           tuple(str(s) for s in z["sources"]), z["vectors"], z["scale"], z["offset"],
                           z["labels"], z["source"], z["role"], z["groups"], z["sha256"], z["reserved"])
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"not a training-evidence file: {exc}") from exc
