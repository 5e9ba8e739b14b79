"""The image catalog: which labelled images the store holds, and which are already trained on.

- `images/<label>/<sha256>.<ext>`: the image bytes (metadata stripped), content-addressed.
- `hashes/<sha256>.json`: the record of one image, for duplicate checks.
- `catalog/<source>/<batch>.jsonl`: records written together (one ingest job, one import), read
  together when a training run builds its dataset (a few objects instead of one per image).
Original filenames are kept inside records only, never in keys.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import NotFound
from shared.manifest import utcnow
from shared.store import ObjectStore

Split = Literal["train", "eval"]
EVAL_EVERY = 5  # uploads without group metadata: one image in five is held out, by hash


def split_for(sha256: str, group: str | None = None) -> Split:
    """Deterministic held-out split: by group (lesion, patient) when known, else by image hash."""
    import hashlib

    basis = hashlib.sha256(group.encode()).hexdigest() if group else sha256
    return "eval" if int(basis[:8], 16) % EVAL_EVERY == 0 else "train"


class ImageRecord(BaseModel):
    """One stored, labelled image."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(description="Hash of the stored bytes; also the object name.")
    label: str = Field(description="Class name from the taxonomy.")
    key: str = Field(description="Object key of the image.")
    split: Split = Field(description="'train' or 'eval' (held out for evaluation and the gate).")
    source: str = Field(description="'upload' or 'import'.")
    filename: str = Field("", description="Name the file had when it was uploaded (not a path).")
    job_id: str | None = Field(None, description="Upload or import job that stored it.")
    group: str | None = Field(None, description="Lesion or patient id, when known.")
    width: int = 0
    height: int = 0
    format: str = ""
    bytes: int = 0
    created_at: dt.datetime = Field(default_factory=utcnow)


def image_key(label: str, sha256: str, image_format: str) -> str:
    extension = {"jpeg": "jpg"}.get(image_format, image_format)
    return f"images/{label}/{sha256}.{extension}"


class Catalog:
    """Reads and writes image records. Loop-only."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    async def find(self, sha256: str) -> ImageRecord | None:
        try:
            return ImageRecord.model_validate_json(await self.store.get(f"hashes/{sha256}.json"))
        except NotFound:
            return None

    async def add_image(self, record: ImageRecord, data: bytes) -> None:
        """Store the bytes, then the record that makes them findable."""
        await self.store.put(record.key, data, content_type=f"image/{record.format}")
        await self.store.put(f"hashes/{record.sha256}.json", record.model_dump_json().encode(),
                             content_type="application/json")

    async def write_batch(self, source: str, batch: str, records: list[ImageRecord]) -> None:
        """Record a batch of stored images so training runs find them."""
        if records:
            lines = "\n".join(r.model_dump_json() for r in records).encode()
            await self.store.put(f"catalog/{source}/{batch}.jsonl", lines, content_type="application/x-ndjson")

    async def records(self) -> list[ImageRecord]:
        """Every catalogued image, once each (first record of a hash wins), oldest batch first."""
        seen: dict[str, ImageRecord] = {}
        for key in await self.store.list("catalog/"):
            for line in (await self.store.get(key)).splitlines():
                if line.strip():
                    record = ImageRecord.model_validate_json(line)
                    seen.setdefault(record.sha256, record)
        return list(seen.values())


def counts(records: list[ImageRecord]) -> dict[str, dict[str, int]]:
    """Images per split and label."""
    result: dict[str, dict[str, int]] = {}
    for (split, label), n in sorted(Counter((r.split, r.label) for r in records).items()):
        result.setdefault(split, {})[label] = n
    return result


def digest(hashes: list[str]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(sorted(hashes)).encode()).hexdigest()
