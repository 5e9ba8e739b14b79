"""A head retrain of the bundled model, on its shipped training evidence, as `make run` starts it:
with nothing new it stays what it was; with melanomas uploaded as nevi it is rejected, in words
that name melanoma; and what it trained on is left for the next retrain to append to."""

from __future__ import annotations

import hashlib
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.catalog import Catalog, ImageRecord, image_key, lesion_group, split_for
from shared.messages import TrainOptions
from shared.registry import ModelRegistry
from shared.settings import REPO_ROOT
from shared.split_secret import load_split_secret
from shared.store import ObjectStore, open_store
from tests.conftest import FIXTURES
from trainer_service.commands.importer import import_dataset
from trainer_service.ml.evidence import Evidence
from trainer_service.ml.retrain import Outcome, Progress, retrain_head
from trainer_service.settings import TrainerSettings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
BASE = REPO_ROOT / "models" / "base"
TURNS = (None, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.ROTATE_90,
         Image.Transpose.ROTATE_270)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store as `make run` leaves it: the bundled model and the sample catalog."""
    root = tmp_path_factory.mktemp("make-run")

    async def seed() -> None:
        store = await open_store((root / "store").as_uri())
        await ModelRegistry(store).bootstrap(BASE)
        await import_dataset(store, REPO_ROOT / "data" / "sample", log=lambda _: None)
        await store.close()

    import asyncio

    asyncio.run(seed())
    yield root / "store"


async def retrain(store: ObjectStore, tmp_path: Path, version: str) -> Outcome:
    settings = TrainerSettings(store_url=store.url, work_dir=tmp_path / "work", metrics_port=0)
    return await retrain_head(store, ModelRegistry(store), TrainOptions(), version=version, settings=settings,
                              progress=Progress(), log=lambda _: None)


async def fresh(seeded: Path, tmp_path: Path) -> ObjectStore:
    shutil.copytree(seeded, tmp_path / "store")
    return await open_store((tmp_path / "store").as_uri())


async def upload_turned(store: ObjectStore, folder: Path, label: str) -> int:
    """Each image of `folder` and four turned copies, stored as uploads labelled `label`."""
    secret = await load_split_secret(store, TrainerSettings().split_secret)
    stored = 0
    for path in sorted(folder.glob("*.jpg")):  # noqa: ASYNC240 - a test's fixture folder
        image = Image.open(path).convert("RGB")
        for turn in TURNS:
            buffer = io.BytesIO()
            (image if turn is None else image.transpose(turn)).save(buffer, "JPEG", quality=92)
            data = buffer.getvalue()
            sha = hashlib.sha256(data).hexdigest()
            record = ImageRecord(sha256=sha, label=label, key=image_key(label, sha, "jpeg"), source="upload",
                                 split=split_for(lesion_group(sha, None), secret), job_id="poison",
                                 format="jpeg", bytes=len(data), width=image.width, height=image.height)
            await Catalog(store).add_image(record, data)
            stored += 1
    await Catalog(store).write_batch("upload", "poison")
    return stored


async def test_a_retrain_with_nothing_new_stays_within_noise_of_the_served_model(seeded: Path,
                                                                                 tmp_path: Path) -> None:
    store = await fresh(seeded, tmp_path)
    outcome = await retrain(store, tmp_path, "again")
    gate = outcome.gate
    # the sample catalog's held-out images are in the evidence (reference) or reserved for the
    # model card's figures: none of them is judged on twice, none of the reserved ones at all
    assert [s.name for s in gate.sets] == ["reference"]
    reference = gate.sets[0]
    assert reference.images > 900 and reference.sources == {"ham10000": reference.images}
    verdicts = {v.label: v for v in reference.classes}
    assert verdicts["melanoma"].support >= 100  # the reference set can show a melanoma change
    assert not [v.label for v in reference.classes if v.judgement == "worse"], gate.reasons
    melanoma = verdicts["melanoma"]
    assert melanoma.current_caught is not None and melanoma.candidate_caught is not None
    assert melanoma.candidate_caught >= melanoma.current_caught - 0.03, melanoma
    data = outcome.manifest.training_data["evidence"]
    assert data["inherited_rows"] > 10_000 and data["added_images"] == 0  # the sample is in the evidence
    assert set(data["validation"]) == {"ham10000", "isic2017"}
    assert "melanoma images from ham10000" in outcome.manifest.referral["melanoma"].basis
    # converted for the workers in a process of its own (the converter holds the GIL for seconds)
    litert = outcome.manifest.litert
    assert litert is not None and (outcome.directory / litert.file).is_file()


async def test_melanomas_uploaded_as_nevi_are_rejected_naming_melanoma(seeded: Path, tmp_path: Path) -> None:
    store = await fresh(seeded, tmp_path)
    assert await upload_turned(store, FIXTURES / "isic2017-val" / "melanoma", "melanocytic_nevi") == 150
    outcome = await retrain(store, tmp_path, "poisoned")
    assert not outcome.gate.passed
    first = outcome.gate.reasons[0]
    assert first.startswith("melanoma: the new images labelled melanocytic_nevi look like melanoma"), first
    assert outcome.evidence is not None
    left = Evidence.from_bytes(outcome.evidence)
    added = outcome.manifest.training_data["evidence"]["added_images"]
    assert len(left) == outcome.manifest.training_data["evidence"]["inherited_rows"] + added
    assert added > 100 and "upload" in left.sources  # the next retrain appends to this
    uploads = left.source_names(np.arange(len(left))) == "upload"
    assert set(left.label_names(uploads)) == {"melanocytic_nevi"}
