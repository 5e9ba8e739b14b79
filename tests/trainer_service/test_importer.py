"""`python -m trainer_service import` keeps a dataset's own split (HAM10000's eval/, ISIC 2017's
val/); images without one are drawn per lesion with the server's split secret."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from shared.catalog import Catalog, lesion_group, split_for
from shared.split_secret import load_split_secret
from shared.store import open_store
from trainer_service.commands.importer import import_dataset

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


def flat_dataset(root: Path, lesion_of: Callable[[int], str]) -> dict[str, str]:
    """HAM10000's images as `root/<class>/*` with a metadata.csv naming each one's lesion
    (`lesion_of(n)` for the n-th); returns image id -> lesion."""
    lesions = {}
    for n, path in enumerate(sorted((FIXTURES / "ham10000").glob("*/*.jpg"))):
        (root / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / path.parent.name / path.name)
        lesions[path.stem] = lesion_of(n)
    rows = "".join(f"{image},{lesion}\n" for image, lesion in lesions.items())
    (root / "metadata.csv").write_text("image_id,lesion_id\n" + rows)
    return lesions


async def test_images_without_a_given_split_are_drawn_per_lesion_with_the_stores_secret(
        tmp_path: Path) -> None:
    lesions = flat_dataset(tmp_path / "flat", lambda n: f"HAM_{n // 3:07d}")  # three images a lesion
    store = await open_store((tmp_path / "store").as_uri())
    try:
        summary = await import_dataset(store, tmp_path / "flat", log=lambda _: None)
        records = await Catalog(store).records()
    finally:
        await store.close()
    assert summary["stored:train"] + summary.get("stored:eval", 0) == len(lesions) == 28
    other = await open_store((tmp_path / "store").as_uri())  # another service on the same store
    secret = await load_split_secret(other, None)
    await other.close()
    by_lesion: dict[str, set[str]] = {}
    for record in records:
        assert record.group == lesions[Path(record.filename).stem]
        assert record.split == split_for(lesion_group(record.sha256, record.group), secret)
        by_lesion.setdefault(record.group, set()).add(record.split)
    assert all(len(splits) == 1 for splits in by_lesion.values()), by_lesion


async def test_a_configured_secret_draws_the_splits_and_nothing_is_stored(tmp_path: Path) -> None:
    flat_dataset(tmp_path / "flat", lambda n: f"HAM_{n:07d}")
    configured = SecretStr("an operator's split secret")
    store = await open_store((tmp_path / "store").as_uri())
    try:
        await import_dataset(store, tmp_path / "flat", split_secret=configured, log=lambda _: None)
        records = await Catalog(store).records()
        assert await store.list("secrets/") == []
    finally:
        await store.close()
    key = configured.get_secret_value().encode()
    assert all(r.split == split_for(lesion_group(r.sha256, r.group), key) for r in records)
