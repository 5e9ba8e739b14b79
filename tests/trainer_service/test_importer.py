"""`python -m trainer_service import` keeps a dataset's own split: HAM10000's eval/, ISIC 2017's val/."""

from __future__ import annotations

import shutil
from pathlib import Path

from shared.catalog import Catalog
from shared.store import open_store
from trainer_service.importer import import_dataset

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


async def test_an_isic_style_val_folder_is_held_out(tmp_path: Path) -> None:
    root = tmp_path / "isic2017"
    for split, label, take in (("train", "melanoma", slice(0, 3)), ("val", "melanoma", slice(3, 4)),
                               ("train", "seborrheic_keratosis", slice(0, 5)),
                               ("val", "seborrheic_keratosis", slice(5, 7))):
        (root / split / label).mkdir(parents=True, exist_ok=True)
        for path in sorted((FIXTURES / "isic2017" / label).iterdir())[take]:
            shutil.copy(path, root / split / label / path.name)
    store = await open_store((tmp_path / "store").as_uri())
    try:
        summary = await import_dataset(store, root, log=lambda _: None)
        assert (summary["stored:train"], summary["stored:eval"]) == (8, 3)
        records = await Catalog(store).records()
        held = sorted(r.label for r in records if r.split == "eval")
        assert held == ["melanoma", "seborrheic_keratosis", "seborrheic_keratosis"]
    finally:
        await store.close()
