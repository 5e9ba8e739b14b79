"""`GET /data/summary`, `/data/samples` and `/data/thumbnails/{sha256}`: the Data section's figures,
computed by the gateway from the stored catalog."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from gateway import thumbnails
from gateway.catalog_view import CatalogView
from gateway.data_views import summarise
from gateway.keys import STORE
from gateway.thumbnails import make_thumbnail
from shared.catalog import Catalog, ImageRecord, counts, image_key, split_for
from shared.store.base import StoreUnavailable
from tests.gateway.conftest import MakeClient
from tests.support.tokens import CONTRIBUTOR

pytestmark = pytest.mark.timeout(60)
SECRET = b"a test's split secret"


async def catalogue(client: object, paths: dict[str, list[Path]]) -> list[ImageRecord]:
    """Store and catalogue the images of `paths` (label -> files) as one batch, as the ingest does."""
    store = client.app[STORE]  # type: ignore[attr-defined]
    catalog = Catalog(store)
    records = []
    for label, files in paths.items():
        for path in files:
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            width, height = Image.open(io.BytesIO(data)).size
            record = ImageRecord(sha256=sha, label=label, key=image_key(label, sha, "jpeg"),
                                 split=split_for(sha, SECRET), source="upload", job_id="batch1", width=width,
                                 height=height, format="jpeg", bytes=len(data))
            await catalog.add_image(record, data)
            records.append(record)
    await catalog.write_batch("upload", "batch1")
    return records


def picked(fixture_images: dict[str, list[Path]]) -> dict[str, list[Path]]:
    return {"melanoma": fixture_images["melanoma"][:4],
            "melanocytic_nevi": fixture_images["melanocytic_nevi"][:3]}


async def test_the_summary_counts_the_catalog_per_split_and_class(
        make_client: MakeClient, fixture_images: dict[str, list[Path]]) -> None:
    client = await make_client(with_worker=False)
    empty = await (await client.get("/data/summary")).json()
    assert empty["total"] == 0 and empty["counts"] == {} and empty["classes"] == []
    records = await catalogue(client, picked(fixture_images))
    body = await (await client.get("/data/summary")).json()
    assert body["total"] == 7
    assert body["counts"] == counts(records)
    assert sum(n for split in body["counts"].values() for n in split.values()) == 7
    assert body["classes"] == ["melanocytic_nevi", "melanoma"]  # taxonomy order
    assert sum(b["count"] for b in body["longest_side"]["bins"]) == 7
    assert sum(b["count"] for b in body["aspect_ratio"]["bins"]) == 7
    sizes = {(r.width, r.height) for r in records}
    assert {(s["width"], s["height"]) for s in body["common_sizes"]} == sizes


async def test_the_data_views_read_each_catalog_object_once_and_see_new_images_at_once(
        make_client: MakeClient, fixture_images: dict[str, list[Path]]) -> None:
    client = await make_client(with_worker=False)
    await catalogue(client, picked(fixture_images))
    store = client.app[STORE]
    reads: list[str] = []
    get = store.get

    async def counted(key: str) -> bytes:
        reads.append(key)
        return await get(key)

    store.get = counted  # type: ignore[method-assign]
    for path in ("/data/summary", "/data/samples", "/data/summary", "/data/samples?per_class=3"):
        assert (await client.get(path, headers=CONTRIBUTOR)).status == 200
    assert reads == ["catalog/upload/batch1.jsonl"]  # one read for four requests
    data = fixture_images["melanocytic_nevi"][3].read_bytes()  # one more image, its batch still open
    sha = hashlib.sha256(data).hexdigest()
    await Catalog(store).add_image(ImageRecord(
        sha256=sha, label="melanocytic_nevi", key=image_key("melanocytic_nevi", sha, "jpeg"), split="train",
        source="upload", job_id="open"), data)
    reads.clear()
    body = await (await client.get("/data/summary")).json()
    assert body["total"] == 8  # the new image counts in the next answer, and only its part is read
    assert [key for key in reads if key.startswith("catalog/")] == [f"catalog/upload/open.parts/{sha}.json"]


def test_histograms_put_each_image_in_its_bin_and_count_unknown_sizes() -> None:
    def record(n: int, width: int, height: int) -> ImageRecord:
        return ImageRecord(sha256=f"{n:064x}", label="melanoma", key=f"images/melanoma/{n}.jpg",
                           split="train", source="upload", width=width, height=height)

    summary = summarise([record(1, 600, 450), record(2, 600, 450), record(3, 100, 100), record(4, 5000, 2000),
                         record(5, 0, 0)])
    sides = {(b.low, b.high): b.count for b in summary.longest_side.bins}
    assert sides[(512, 768)] == 2 and sides[(0, 256)] == 1 and sides[(4096, None)] == 1
    assert summary.longest_side.unknown == 1 and sum(sides.values()) == 4
    ratios = {(b.low, b.high): b.count for b in summary.aspect_ratio.bins}
    assert ratios[(1.25, 1.4)] == 2 and ratios[(0.9, 1.1)] == 1 and ratios[(2.0, None)] == 1
    assert summary.common_sizes[0].width == 600 and summary.common_sizes[0].count == 2


async def test_samples_name_thumbnails_made_once_and_kept_in_the_store(
        make_client: MakeClient, fixture_images: dict[str, list[Path]]) -> None:
    client = await make_client(with_worker=False)
    records = await catalogue(client, picked(fixture_images))
    body = await (await client.get("/data/samples?per_class=2", headers=CONTRIBUTOR)).json()
    by_label = {c["label"]: c for c in body["classes"]}
    assert by_label["melanoma"]["count"] == 4 and len(by_label["melanoma"]["samples"]) == 2
    assert len(by_label["melanocytic_nevi"]["samples"]) == 2
    sample = by_label["melanoma"]["samples"][0]
    assert sample["sha256"] == min(r.sha256 for r in records if r.label == "melanoma")
    response = await client.get(sample["thumbnail_url"], headers=CONTRIBUTOR)
    assert response.status == 200 and response.content_type == "image/jpeg"
    assert response.headers["Cache-Control"].startswith("private")  # patients' images: no shared cache
    assert response.headers["Vary"] == "Authorization"
    small = Image.open(io.BytesIO(await response.read()))
    assert small.format == "JPEG" and max(small.size) == 160
    store = client.app[STORE]
    assert await store.exists(f"thumbnails/{sample['sha256']}.jpg")
    original = next(r for r in records if r.sha256 == sample["sha256"])
    await store.delete(original.key)  # the cached thumbnail no longer needs the image
    assert (await client.get(sample["thumbnail_url"], headers=CONTRIBUTOR)).status == 200


@pytest.mark.parametrize("path,status,code", [
    ("/data/samples?per_class=0", 400, "invalid_per_class"),
    ("/data/samples?per_class=abc", 400, "invalid_per_class"),
    ("/data/thumbnails/not-a-hash", 400, "invalid_sha256"),
    (f"/data/thumbnails/{'A' * 64}", 400, "invalid_sha256"),
    (f"/data/thumbnails/{'0' * 64}", 404, "no_such_image"),
])
async def test_bad_data_requests_are_4xx_with_a_reason(make_client: MakeClient, path: str, status: int,
                                                       code: str) -> None:
    client = await make_client(with_worker=False)
    response = await client.get(path, headers=CONTRIBUTOR)
    assert response.status == status
    assert (await response.json())["error"]["code"] == code


async def test_a_thumbnail_asked_for_many_times_at_once_is_made_once(
        make_client: MakeClient, fixture_images: dict[str, list[Path]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    client = await make_client(with_worker=False)
    record = (await catalogue(client, picked(fixture_images)))[0]
    made: list[int] = []

    def counted(data: bytes, side: int = thumbnails.SIDE) -> bytes:
        made.append(len(data))
        return make_thumbnail(data, side)

    monkeypatch.setattr(thumbnails, "make_thumbnail", counted)
    answers = await asyncio.gather(*[client.get(f"/data/thumbnails/{record.sha256}", headers=CONTRIBUTOR)
                                     for _ in range(8)])
    assert [a.status for a in answers] == [200] * 8
    assert len({await a.read() for a in answers}) == 1
    assert len(made) == 1  # one decode of the full-size image, however many asked at once


async def test_a_thumbnail_the_store_cannot_keep_is_still_answered(
        make_client: MakeClient, fixture_images: dict[str, list[Path]]) -> None:
    client = await make_client(with_worker=False)
    record = (await catalogue(client, picked(fixture_images)))[0]
    store = client.app[STORE]
    put = store.put

    async def refusing(key: str, data: bytes, **kwargs: Any) -> None:
        if key.startswith("thumbnails/"):
            raise StoreUnavailable("the store refused the write")
        await put(key, data, **kwargs)

    store.put = refusing  # type: ignore[method-assign]
    response = await client.get(f"/data/thumbnails/{record.sha256}", headers=CONTRIBUTOR)
    assert response.status == 200 and response.content_type == "image/jpeg"  # made again next time


async def test_a_404_names_no_store_key(make_client: MakeClient,
                                        fixture_images: dict[str, list[Path]]) -> None:
    client = await make_client(with_worker=False)
    record = (await catalogue(client, picked(fixture_images)))[0]
    await client.app[STORE].delete(record.key)  # the image is gone, its record is not
    response = await client.get(f"/data/thumbnails/{record.sha256}", headers=CONTRIBUTOR)
    assert response.status == 404
    assert record.key not in (await response.json())["error"]["message"]  # was "no object 'images/...'"


async def test_a_batch_rewritten_in_place_is_seen_at_once(
        make_client: MakeClient, fixture_images: dict[str, list[Path]]) -> None:
    client = await make_client(with_worker=False)
    await catalogue(client, picked(fixture_images))
    view = CatalogView(client.app[STORE])
    assert await view.derived("total", len) == 7
    data = fixture_images["melanocytic_nevi"][3].read_bytes()  # the same batch ends again, one image more
    sha = hashlib.sha256(data).hexdigest()
    catalog = Catalog(client.app[STORE])
    await catalog.add_image(ImageRecord(
        sha256=sha, label="melanocytic_nevi", key=image_key("melanocytic_nevi", sha, "jpeg"), split="train",
        source="upload", job_id="batch1"), data)
    await catalog.write_batch("upload", "batch1")  # same key, its parts gone: the same keys listed
    assert await view.derived("total", len) == 8
