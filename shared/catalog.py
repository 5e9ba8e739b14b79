"""The image catalog: which labelled images the store holds, and which are already trained on.

- `images/<label>/<sha256>.<ext>`: the image bytes (metadata stripped), content-addressed.
- `catalog/<source>/<batch>.parts/<sha256>.json`: the record of one image, written as soon as
  the image is stored, so an image is catalogued even when its job fails a moment later.
- `hashes/<sha256>.json`: the record again, for duplicate checks; written last, so an image that
  counts as a duplicate is always catalogued.
- `secrets/split.json`: the server's split secret (`shared/split_secret.py`), never served.
- `catalog/<source>/<batch>.jsonl`: the records of one batch (one ingest job, one import)
  gathered into one object when the batch ends (`write_batch`), its parts then deleted, so a
  training run reads a few objects instead of one per image. Parts left by a batch that never
  ended are catalogued all the same.
Original filenames are kept inside records only, never in keys.

Splits are drawn per lesion group (`lesion_group`: the lesion or patient id when known, else the
image itself) with a keyed hash of the group under the server's secret (`split_for`), so nobody
without the secret can compute, choose or search for the split of an image: re-encoding an image
until its content hash lands in `eval` no longer works. The split is drawn once, when the image
is stored, and `ImageRecord.split` is the truth from then on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections import Counter
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import NotFound
from shared.manifest import utcnow
from shared.store import ObjectStore

Split = Literal["train", "eval"]
CATALOG_PREFIX = "catalog/"
EVAL_EVERY = 5  # one lesion group in five is held out
VALIDATION_EVERY = 10  # one training lesion group in ten validates a retrain


def lesion_group(sha256: str, group: str | None) -> str:
    """What a split is drawn for: the lesion (or patient) when known, else the image alone."""
    return group or sha256


def _draw(secret: bytes, purpose: bytes, group: str) -> int:
    """A keyed, uniform 64-bit draw for `group`; one `purpose` per question, so the draws of
    different questions are independent."""
    if not secret:
        raise ValueError("the split secret is empty")
    mac = hmac.new(secret, purpose + b"\0" + group.encode(), hashlib.sha256).digest()
    return int.from_bytes(mac[:8], "big")


def split_for(group: str, secret: bytes) -> Split:
    """The split of every image of lesion group `group` (`lesion_group(...)`): 'eval' for one
    group in EVAL_EVERY, drawn with the server's `secret` (`shared.split_secret`). Deterministic
    for one secret; unknowable and unsteerable without it. Raises ValueError on an empty secret."""
    return "eval" if _draw(secret, b"split", group) % EVAL_EVERY == 0 else "train"


def validation_share(group: str, secret: bytes) -> bool:
    """Whether the training images of lesion group `group` validate a retrain (one group in
    VALIDATION_EVERY, drawn with `secret` independently of `split_for`): every image of a lesion on
    one side. Call it on records whose split is 'train' with `lesion_group(r.sha256, r.group)`.
    Raises ValueError on an empty secret."""
    return _draw(secret, b"validation", group) % VALIDATION_EVERY == 0


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


def _batch_key(source: str, batch: str) -> str:
    return f"catalog/{source}/{batch}.jsonl"


def _parts_prefix(source: str, batch: str) -> str:
    return f"catalog/{source}/{batch}.parts/"


def _batch_of(record: ImageRecord) -> str:
    return record.job_id or "unbatched"


class Catalog:
    """Reads and writes image records. Loop-only."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    async def find(self, sha256: str) -> ImageRecord | None:
        """The catalogued record of an image, or None. A hash record whose image is in no batch
        (left by a job that failed before images were catalogued one by one) counts as None:
        the image may be stored again, and then it is catalogued."""
        try:
            record = ImageRecord.model_validate_json(await self.store.get(f"hashes/{sha256}.json"))
        except NotFound:
            return None
        batch = _batch_of(record)
        if await self.store.exists(f"{_parts_prefix(record.source, batch)}{sha256}.json") or \
                await self.store.exists(_batch_key(record.source, batch)):
            return record
        return None

    async def add_image(self, record: ImageRecord, data: bytes) -> None:
        """Store the bytes, then catalogue them (a part of the record's batch), then the hash
        record that makes them count as duplicates. Idempotent."""
        await self.store.put(record.key, data, content_type=f"image/{record.format}")
        body = record.model_dump_json().encode()
        await self.store.put(f"{_parts_prefix(record.source, _batch_of(record))}{record.sha256}.json", body,
                             content_type="application/json")
        await self.store.put(f"hashes/{record.sha256}.json", body, content_type="application/json")

    async def write_batch(self, source: str, batch: str, records: list[ImageRecord] | None = None) -> None:
        """End a batch: its records (`records`, the parts `add_image` wrote, and any earlier
        `write_batch` of the same batch) gathered into one object, then the parts deleted."""
        parts = await self.store.list(_parts_prefix(source, batch))
        gathered: dict[str, ImageRecord] = {}
        if parts:
            try:
                earlier = (await self.store.get(_batch_key(source, batch))).splitlines()
            except NotFound:
                earlier = []
            for line in [*earlier, *[await self.store.get(key) for key in parts]]:
                if line.strip():
                    record = ImageRecord.model_validate_json(line)
                    gathered.setdefault(record.sha256, record)
        for record in records or []:
            gathered.setdefault(record.sha256, record)
        if gathered:
            lines = "\n".join(r.model_dump_json() for r in gathered.values()).encode()
            await self.store.put(_batch_key(source, batch), lines, content_type="application/x-ndjson")
        for key in parts:
            await self.store.delete(key)

    async def keys(self) -> list[str]:
        """The catalog's objects (batches and parts), in key order: what `records` reads."""
        return await self.store.list(CATALOG_PREFIX)

    async def stamped_keys(self) -> dict[str, str]:
        """`keys`, each with its store stamp (`ObjectStore.list_stamped`): a batch ended again
        under its key has a new one."""
        return await self.store.list_stamped(CATALOG_PREFIX)

    async def records_in(self, key: str) -> list[ImageRecord]:
        """The records of one catalog object (a batch or a part); [] for one deleted since it was
        listed (a batch that ended deletes its parts, whose records are in the batch then)."""
        try:
            body = await self.store.get(key)
        except NotFound:
            return []
        return [ImageRecord.model_validate_json(line) for line in body.splitlines() if line.strip()]

    async def records(self) -> list[ImageRecord]:
        """Every catalogued image, once each (first record of a hash wins), in key order."""
        return unique([await self.records_in(key) for key in await self.keys()])


def unique(groups: list[list[ImageRecord]]) -> list[ImageRecord]:
    """The records of `groups`, in order, once per image hash (the first one wins)."""
    seen: dict[str, ImageRecord] = {}
    for group in groups:
        for record in group:
            seen.setdefault(record.sha256, record)
    return list(seen.values())


def counts(records: list[ImageRecord]) -> dict[str, dict[str, int]]:
    """Images per split and label."""
    result: dict[str, dict[str, int]] = {}
    for (split, label), n in sorted(Counter((r.split, r.label) for r in records).items()):
        result.setdefault(split, {})[label] = n
    return result


def digest(hashes: list[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(hashes)).encode()).hexdigest()
