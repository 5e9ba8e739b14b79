"""The catalog: an image is catalogued the moment it is stored, and counts as a duplicate only
when it is catalogued; ending a batch gathers its records into one object."""

from __future__ import annotations

from pathlib import Path

from shared.catalog import Catalog, ImageRecord
from shared.store import open_store


def record(n: int, batch: str = "job1", source: str = "upload") -> ImageRecord:
    sha = f"{n:064x}"
    return ImageRecord(sha256=sha, label="melanoma", key=f"images/melanoma/{sha}.jpg", split="train",
                       source=source, job_id=batch, format="jpeg")


async def test_a_stored_image_is_catalogued_before_its_batch_ends(tmp_path: Path) -> None:
    store = await open_store(tmp_path.as_uri())
    catalog = Catalog(store)
    await catalog.add_image(record(1), b"jpeg bytes")
    # a job failing now loses nothing:
    assert [r.sha256 for r in await catalog.records()] == [record(1).sha256]
    assert (await catalog.find(record(1).sha256)) is not None


async def test_ending_a_batch_gathers_its_parts_into_one_object(tmp_path: Path) -> None:
    store = await open_store(tmp_path.as_uri())
    catalog = Catalog(store)
    for n in range(3):
        await catalog.add_image(record(n), b"x")
    await catalog.write_batch("upload", "job1")
    assert await store.list("catalog/") == ["catalog/upload/job1.jsonl"]
    await catalog.add_image(record(3), b"x")  # the same batch once more (a retried job)
    await catalog.write_batch("upload", "job1", [record(4)])
    assert await store.list("catalog/") == ["catalog/upload/job1.jsonl"]
    assert sorted(r.sha256 for r in await catalog.records()) == [record(n).sha256 for n in range(5)]
    assert all([await catalog.find(record(n).sha256) for n in range(4)])


async def test_a_hash_record_without_a_catalogued_image_is_no_duplicate(tmp_path: Path) -> None:
    store = await open_store(tmp_path.as_uri())
    orphan = record(7, batch="failed-before-this-fix")
    await store.put(f"hashes/{orphan.sha256}.json", orphan.model_dump_json().encode())
    assert await Catalog(store).find(orphan.sha256) is None
    await Catalog(store).add_image(orphan, b"x")
    assert await Catalog(store).find(orphan.sha256) == orphan


async def test_a_batch_ending_while_the_catalog_is_read_loses_no_record_and_raises_nothing(
        tmp_path: Path) -> None:
    store = await open_store(tmp_path.as_uri())
    catalog = Catalog(store)
    for n in range(3):
        await catalog.add_image(record(n), b"jpeg bytes")
    listed = await catalog.keys()  # the parts, listed by a reader...
    await catalog.write_batch("upload", "job1")  # ...which the batch's end deletes before it reads them
    assert [await catalog.records_in(key) for key in listed] == [[], [], []]
    assert len(await catalog.records()) == 3
