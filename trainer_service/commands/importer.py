"""`python -m trainer_service import PATH`: load a labelled dataset into the store's catalog.

Layouts: `PATH/<class>/*` (each lesion group's split drawn with the server's split secret,
`shared.split_secret`: the group is the lesion a `metadata.csv` names, else the image alone), or
`PATH/train/<class>/*` + `PATH/eval/<class>/*` or `PATH/val/<class>/*` (HAM10000 and ISIC 2017 as
shipped here: the given split is kept). Images are validated and stripped of metadata like uploads.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from shared.catalog import Catalog, ImageRecord, Split, image_key, lesion_group, split_for
from shared.errors import DermaScanError
from shared.imaging import DEFAULT_MAX_PIXELS
from shared.sanitize import CleanImage, clean_image
from shared.split_secret import load_split_secret
from shared.store import ObjectStore
from shared.taxonomy import is_known
from trainer_service.ml.dataset import IMAGE_SUFFIXES, read_lesion_ids

_CHUNK = 64
#: Folders beside `train/` whose images are held out: HAM10000's `eval/`, ISIC 2017's `val/`.
HELD_OUT_FOLDERS = ("eval", "val")


def _layout(root: Path) -> list[tuple[Split | None, Path]]:
    if (root / "train").is_dir():
        splits: list[tuple[Split | None, Path]] = [("train", root / "train")]
        for held_out in HELD_OUT_FOLDERS:
            if (root / held_out).is_dir():
                splits.append(("eval", root / held_out))
        return splits
    return [(None, root)]


def _clean(path: Path) -> CleanImage:
    return clean_image(path.read_bytes(), max_pixels=DEFAULT_MAX_PIXELS)


async def import_dataset(store: ObjectStore, root: Path, *, batch: str | None = None,
                         split_secret: SecretStr | None = None, log: Any = print) -> dict[str, Any]:
    """Import every image under `root`; returns counts of stored, duplicate and skipped files.
    `split_secret` is the configured `DERMASCAN_SPLIT_SECRET` (None: the store's, as every
    service reads it). Raises FileNotFoundError when `root` is not a folder."""
    if not await asyncio.to_thread(root.is_dir):
        raise FileNotFoundError(f"{root} is not a folder")
    secret = await load_split_secret(store, split_secret)
    catalog = Catalog(store)
    lesions = read_lesion_ids(root)
    batch = batch or f"{root.name}-{time.strftime('%Y%m%dT%H%M%S')}"
    tally: Counter[str] = Counter()
    records: list[ImageRecord] = []
    seen: set[str] = set()

    async def one(path: Path, label: str, given: Split | None) -> None:
        try:
            image = await asyncio.to_thread(_clean, path)
        except DermaScanError as exc:
            tally[f"rejected:{exc.code}"] += 1
            return
        if image.sha256 in seen or await catalog.find(image.sha256) is not None:
            tally["duplicate"] += 1
            return
        seen.add(image.sha256)
        group = lesions.get(path.stem)
        split = given or split_for(lesion_group(image.sha256, group), secret)
        record = ImageRecord(sha256=image.sha256, label=label,
                             key=image_key(label, image.sha256, image.format),
                             split=split, source="import",
                             filename=path.name, job_id=batch, group=group, width=image.width,
                             height=image.height, format=image.format, bytes=len(image.data))
        await catalog.add_image(record, image.data)
        records.append(record)
        tally[f"stored:{record.split}"] += 1

    for given, folder in _layout(root):
        for class_dir in sorted(d for d in folder.iterdir() if d.is_dir()):
            label = class_dir.name.lower()
            files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not is_known(label):
                tally["skipped_unknown_class"] += len(files)
                log(f"skipping {class_dir.name}/: not a class of the taxonomy")
                continue
            for start in range(0, len(files), _CHUNK):
                await asyncio.gather(*(one(p, label, given) for p in files[start : start + _CHUNK]))
            log(f"{given or 'auto'}/{label}: {len(files)} files")
    await catalog.write_batch("import", batch, records)
    return {"batch": batch, **dict(sorted(tally.items()))}
