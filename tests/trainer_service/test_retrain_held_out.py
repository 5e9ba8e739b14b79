"""A class that only the held-out split has (one upload of a new class drawn into `eval`)
is left out of the gate's evaluation: the retrain works, it does not fail with KeyError."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from shared.catalog import Catalog, ImageRecord, image_key
from shared.messages import TrainOptions
from shared.registry import ModelRegistry
from shared.store import open_store
from tests.conftest import FIXTURES, TEST_SPLIT_SECRET
from trainer_service.commands.importer import import_dataset
from trainer_service.ml.retrain import Progress, retrain_head
from trainer_service.settings import TrainerSettings

pytestmark = pytest.mark.timeout(300)


def held_out_image() -> tuple[bytes, str]:
    """A JPEG, and its hash (its record says it is held out)."""
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue(), hashlib.sha256(buffer.getvalue()).hexdigest()


async def test_a_class_only_the_held_out_split_has_is_skipped(tmp_path: Path, tiny_model_dir: Path) -> None:
    store = await open_store((tmp_path / "store").as_uri())
    await import_dataset(store, FIXTURES / "ham10000", split_secret=SecretStr(TEST_SPLIT_SECRET),
                         log=lambda _: None)
    data, sha = held_out_image()
    eczema = ImageRecord(sha256=sha, label="eczema", key=image_key("eczema", sha, "jpeg"), split="eval",
                         source="upload", job_id="upload1", format="jpeg", bytes=len(data), width=64,
                         height=64)
    await Catalog(store).add_image(eczema, data)
    records = await Catalog(store).records()
    assert {r.split for r in records if r.label == "eczema"} == {"eval"}  # no training image of it
    registry = ModelRegistry(store)
    await registry.bootstrap(tiny_model_dir)
    settings = TrainerSettings(store_url=store.url, work_dir=tmp_path / "work",
                               bundled_model_dir=tiny_model_dir,
                               metrics_port=0)

    outcome = await retrain_head(store, registry, TrainOptions(epochs=2), version="tiny-v2",
                                 settings=settings,
                                 progress=Progress(), log=lambda _: None)

    assert "eczema" not in outcome.manifest.classes
    known_held_out = [r for r in records if r.split == "eval" and r.label in outcome.manifest.classes]
    assert outcome.manifest.training_data["held_out"] == len(known_held_out) > 0
