"""The data step of a head retrain: the parent's training evidence plus the catalog's new images.

- **fit**: the parent's `fit` rows and the catalog's new `train` images outside their
  validation share; each source (ham10000, isic2017, upload, import...) is its own stratum in
  the sampling, so uploads weigh as much inside a class as a public set does.
- **validation**: the parent's `validation` rows plus the uploads' validation share (one lesion
  group in ten, drawn with the server's split secret, `shared.catalog.validation_share`): the
  operating points are fitted there, per source.
- **reference**: the parent's `reference` rows (the lineage's held-out images, e.g. the gate half of
  HAM10000 `eval/`), for the gate only.
- **uploads**: the catalog's held-out (`eval`) images not in the evidence, for the gate only,
  reported apart from the reference.

Images the evidence already holds (by sha256, reserved report images included) are not added
again nor judged on. Nothing falls back silently: no training images, no validation images or no
held-out images end the job with a clear code.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shared.catalog import Catalog, ImageRecord, lesion_group, validation_share
from shared.errors import NotFound, Unprocessable
from shared.registry import ModelRegistry
from shared.split_secret import load_split_secret
from shared.store import ObjectStore
from trainer_service.ml.current_model import CurrentModel, Progress, ensure_embeddings
from trainer_service.ml.evidence import Evidence, Role
from trainer_service.settings import TrainerSettings

Log = Callable[[str], None]


@dataclass(frozen=True)
class Rows:
    """Embeddings with their labels (indices into the run's classes) and sources."""

    x: np.ndarray
    y: np.ndarray
    sources: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def counts(self, classes: list[str]) -> dict[str, dict[str, int]]:
        """Images per source and class: what a manifest records a step was fitted or judged on."""
        out: dict[str, dict[str, int]] = {}
        for (source, label), n in sorted(Counter(zip(self.sources.tolist(), self.y.tolist(),
                                                     strict=True)).items()):
            out.setdefault(str(source), {})[classes[label]] = n
        return out

    def strata(self) -> np.ndarray:
        """One stratum per (source, class) cell, for `head.fit_head`'s sampling."""
        names = sorted(set(self.sources.tolist()))
        k = int(self.y.max()) + 1 if len(self.y) else 1
        strata: np.ndarray = np.array([names.index(s) for s in self.sources.tolist()], np.int64) * k + self.y
        return strata


@dataclass(frozen=True)
class TrainingData:
    """What a head retrain fits, validates and judges on, and the evidence it will leave."""

    classes: list[str]
    evidence: Evidence
    inherited: int
    fit: Rows
    validation: Rows
    reference: Rows
    uploads: Rows
    added: list[ImageRecord]
    records: list[ImageRecord]
    backbone_id: str

    def summary(self) -> dict[str, object]:
        """The manifest's account of the data: per step, images per source and class."""
        return {"fit": self.fit.counts(self.classes), "validation": self.validation.counts(self.classes),
                "reference": self.reference.counts(self.classes),
                "uploads_held_out": self.uploads.counts(self.classes),
                "inherited_rows": self.inherited, "added_images": len(self.added)}


async def parent_evidence(registry: ModelRegistry, current: CurrentModel, backbone_id: str,
                          log: Log) -> Evidence | None:
    """The current model's training evidence, or None when it has none (then a retrain fits on
    the catalog alone and says so). Raises Unprocessable when its evidence is of another backbone."""
    try:
        stored = await registry.evidence(current.manifest.version)
        evidence = await asyncio.to_thread(Evidence.from_bytes, stored)
    except NotFound:
        log(f"{current.manifest.version} has no training evidence: this retrain fits on the catalog alone")
        return None
    if evidence.backbone != backbone_id:
        raise Unprocessable(f"the training evidence of {current.manifest.version} is of backbone "
                            f"{evidence.backbone}, the model's is {backbone_id}", code="evidence_mismatch")
    log(f"training evidence of {current.manifest.version}: {len(evidence)} images {evidence.summary()}")
    return evidence


def _rows(evidence: Evidence, mask: np.ndarray, classes: list[str]) -> Rows:
    return Rows(evidence.embeddings(mask), np.array([classes.index(c) for c in evidence.label_names(mask)],
                                                    np.int64), evidence.source_names(mask))


async def gather(store: ObjectStore, registry: ModelRegistry, current: CurrentModel,
                 settings: TrainerSettings, *, progress: Progress, log: Log) -> TrainingData:
    """The data of a head retrain of `current` (see the module's docstring). Raises Unprocessable
    with code no_training_data, no_validation_data or no_held_out_data when a step has nothing."""
    parent = current.manifest
    backbone_id = parent.backbone_version or parent.version
    inherited = await parent_evidence(registry, current, backbone_id, log)
    records = await Catalog(store).records()
    known = await asyncio.to_thread(inherited.hashes) if inherited is not None else set()
    classes = sorted(set(parent.classes) | {r.label for r in records if r.split == "train"})
    added = [r for r in records if r.split == "train" and r.sha256 not in known]
    held = [r for r in records if r.split == "eval" and r.label in classes and r.sha256 not in known]
    if inherited is None and not added:
        raise Unprocessable("no training images: import a dataset or upload labelled images first",
                            code="no_training_data")
    log(f"catalog: {len(added)} training images to add, {len(held)} held out "
        f"({len(records) - len(added) - len(held)} already in the evidence or of an unknown class)")
    _, cache = await ensure_embeddings(store, current, added + held, batch_size=settings.embed_batch_size,
                                       progress=progress, log=log, cache_dir=settings.work_dir / "litert")
    secret = await load_split_secret(store, settings.split_secret)
    roles: list[Role] = ["validation" if validation_share(lesion_group(r.sha256, r.group), secret) else "fit"
                         for r in added]
    # the arrays: CPU work off the event loop (in `make run` the loop also serves /predict)
    evidence, fit, validation, reference, uploads = await asyncio.to_thread(
        _assemble, inherited, backbone_id, added, roles, held, cache, classes)
    if not len(fit):
        raise Unprocessable("no training images outside the validation share", code="no_training_data")
    if not len(validation):
        raise Unprocessable("no validation images to fit the operating points on: upload more images "
                            "(one lesion in ten validates)", code="no_validation_data")
    if not len(reference) and not len(uploads):
        raise Unprocessable("no held-out images to judge a candidate on: the model has no reference set and "
                            "the catalog holds no held-out image", code="no_held_out_data")
    return TrainingData(classes, evidence, len(inherited) if inherited is not None else 0, fit, validation,
                        reference, uploads, added, records, backbone_id)


def _assemble(inherited: Evidence | None, backbone_id: str, added: list[ImageRecord], roles: list[Role],
              held: list[ImageRecord], cache: dict[str, np.ndarray],
              classes: list[str]) -> tuple[Evidence, Rows, Rows, Rows, Rows]:
    """The new evidence (the parent's plus the added images) and the arrays of each step."""
    columns = ([r.label for r in added], [r.source for r in added], roles,
               [lesion_group(r.sha256, r.group) for r in added], [r.sha256 for r in added])
    x_added = np.stack([cache[r.sha256] for r in added]).astype(np.float32) if added else None
    if inherited is None:
        assert x_added is not None
        evidence = Evidence.build(backbone_id, x_added, *columns)
    else:
        evidence = inherited.append(x_added if x_added is not None
                                    else np.zeros((0, inherited.vectors.shape[1])), *columns)
    fit, validation, reference = (_rows(evidence, evidence.mask(role), classes)
                                  for role in ("fit", "validation", "reference"))
    uploads = Rows(np.stack([cache[r.sha256] for r in held]).astype(np.float32) if held
                   else np.zeros((0, evidence.vectors.shape[1]), np.float32),
                   np.array([classes.index(r.label) for r in held], np.int64),
                   np.array([r.source for r in held]))
    return evidence, fit, validation, reference, uploads
