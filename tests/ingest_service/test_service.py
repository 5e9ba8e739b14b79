"""Ingest jobs that cannot be blown up or lose images: archives expanded one member at a time
within caps, images catalogued as they are stored, store outages retried, staged uploads
cleaned up, every file accounted for."""

from __future__ import annotations

import asyncio
import io
import tracemalloc

import pytest
from PIL import Image

from shared.catalog import Catalog, ImageRecord
from shared.jobs import IngestResult, Job, JobStore
from shared.messages import IngestRequest, StagedFile, encode
from shared.store import ObjectStore, open_store
from tests.ingest_service.conftest import (
    FlakyStore,
    MakeIngest,
    make_hostile_corpus,
    noise_images,
    outcomes_by_name,
    result_of,
)

pytestmark = pytest.mark.timeout(60)
MB = 1000 * 1000


async def staged_left(store: ObjectStore, job_id: str) -> list[str]:
    """The job's staged uploads still there after up to 5 s (they go just after the final record)."""
    for _ in range(100):
        if not (keys := await store.list(f"uploads/{job_id}/")):
            break
        await asyncio.sleep(0.05)
    return keys


async def test_the_audits_zip_bomb_is_expanded_one_member_at_a_time_up_to_the_archive_cap(
        make_ingest: MakeIngest) -> None:
    ingest = await make_ingest()  # default caps: 20 MiB a member, 512 MiB an archive
    bomb = make_hostile_corpus.zip_bomb(100, 20 * MB)  # 1.9 MB that expands to 2 GB
    assert len(bomb) < 2 * MB
    tracemalloc.start()
    try:
        job = await ingest.wait(await ingest.submit([("bomb.zip", bomb), *noise_images(1)]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert job.state == "succeeded", job.error
    outcomes = outcomes_by_name(job)
    assert outcomes["melanoma_0.jpg"]["status"] == "stored"  # the valid file of the same job
    members = [o for name, o in sorted(outcomes.items()) if name.startswith("bomb.zip:")]
    assert len(members) == 100
    read = 536_870_912 // (20 * MB)  # members that fit the 512 MiB archive cap: 26
    assert [m["reason"] for m in members] == ["corrupt_image"] * read + ["archive_too_large"] * (100 - read)
    assert "this file and the ones after it were not read" in str(members[-1]["message"])
    assert peak < 100 * MB, f"peak {peak / MB:.0f} MB: members must not be held together (was > 2 GB)"


async def test_the_job_cap_stops_expansion_across_archives(make_ingest: MakeIngest) -> None:
    ingest = await make_ingest(max_zip_bytes=40 * MB, max_job_zip_bytes=50 * MB)
    bomb = make_hostile_corpus.zip_bomb(3, 10 * MB)
    job = await ingest.wait(await ingest.submit([("a.zip", bomb), ("b.zip", bomb)]))
    reasons = [o.reason for o in result_of(job).files]
    assert reasons == ["corrupt_image"] * 5 + ["job_too_large"]


async def test_a_member_over_the_size_cap_is_one_rejection_and_the_rest_are_read(
        make_ingest: MakeIngest) -> None:
    ingest = await make_ingest(max_member_bytes=5 * MB)
    archive = make_hostile_corpus.zip_of({"melanoma/big.jpg": make_hostile_corpus.JPEG_MAGIC + bytes(6 * MB),
                                          "melanoma/ok.jpg": make_hostile_corpus.noise_image(1)})
    job = await ingest.wait(await ingest.submit([("x.zip", archive)]))
    outcomes = outcomes_by_name(job)
    assert outcomes["x.zip:melanoma/big.jpg"]["reason"] == "too_large"
    assert outcomes["x.zip:melanoma/ok.jpg"]["status"] == "stored"


async def test_images_stored_before_a_job_fails_stay_catalogued_and_are_not_lost(make_ingest: MakeIngest,
                                                                                tmp_path: object) -> None:
    flaky = FlakyStore(await open_store(f"file://{tmp_path}/store"))
    ingest = await make_ingest(store=flaky)
    files = noise_images(4)
    image_puts: list[str] = []

    def failing(op: str, key: str) -> bool:  # the third image cannot be written
        if op == "put" and key.startswith("images/"):
            image_puts.append(key)
            return len(set(image_puts)) == 3
        return False

    flaky.failing = failing
    flaky.error = lambda: PermissionError("access denied")  # not transient: the job fails at once
    job = await ingest.wait(await ingest.submit(files))

    assert job.state == "failed" and job.error is not None and job.error.code == "internal_error"
    result = result_of(job)
    assert result.stored == 2 and result.unprocessed == 2
    assert [o.status for o in result.files] == ["stored", "stored"]
    catalogued = {r.sha256 for r in await Catalog(flaky.inner).records()}
    assert catalogued == {o.sha256 for o in result.files}, "stored images are in the training catalog"
    assert await staged_left(flaky.inner, job.job_id) == [], "a failed job's staged uploads are deleted"

    flaky.failing = lambda op, key: False
    again = await ingest.wait(await ingest.submit(files))
    assert [o.status for o in result_of(again).files] == [
        "duplicate", "duplicate", "stored", "stored"]
    assert len(await Catalog(flaky.inner).records()) == 4


async def test_an_image_an_old_failed_job_left_uncatalogued_is_stored_again(make_ingest: MakeIngest) -> None:
    ingest = await make_ingest()
    [(name, data)] = noise_images(1)
    first = await ingest.wait(await ingest.submit([(name, data)]))
    [stored] = result_of(first).files
    assert stored.sha256 is not None
    record = ImageRecord.model_validate(await Catalog(ingest.store).find(stored.sha256))
    for key in await ingest.store.list("catalog/"):  # as before images were catalogued one by one
        await ingest.store.delete(key)
    assert await ingest.store.exists(f"hashes/{record.sha256}.json")

    again = await ingest.wait(await ingest.submit([(name, data)]))
    assert result_of(again).files[0].status == "stored"
    assert [r.sha256 for r in await Catalog(ingest.store).records()] == [record.sha256]


async def test_a_store_outage_shorter_than_the_retry_budget_is_ridden_out(make_ingest: MakeIngest,
                                                                         tmp_path: object) -> None:
    flaky = FlakyStore(await open_store(f"file://{tmp_path}/store"))
    ingest = await make_ingest(store=flaky, store_retry_s=10, store_retry_first_s=0.05,
                               store_retry_max_wait_s=0.2)
    outage = {"calls": 0}

    def failing(op: str, key: str) -> bool:  # down for 10 calls once the first image is stored
        if outage["calls"] or (op == "put" and key.startswith("images/")):
            outage["calls"] += 1
        return 1 < outage["calls"] <= 11

    flaky.failing = failing
    job = await ingest.wait(await ingest.submit(noise_images(3)), timeout=30)
    assert job.state == "succeeded", job.error
    assert result_of(job).stored == 3
    assert flaky.failures == 10 and ingest.metric("store_retries_total", operation="put") >= 1
    assert ingest.metric("requeues_total") == 0


async def test_an_outage_past_the_budget_requeues_the_job_then_fails_it_listing_what_it_stored(
        make_ingest: MakeIngest, tmp_path: object) -> None:
    flaky = FlakyStore(await open_store(f"file://{tmp_path}/store"))
    ingest = await make_ingest(store=flaky, store_retry_s=0.2, store_retry_first_s=0.05, max_attempts=3)
    stored: set[str] = set()

    def failing(op: str, key: str) -> bool:  # image writes fail for good after the second
        if op == "put" and key.startswith("images/"):
            if len(stored) >= 2 and key not in stored:
                return True
            stored.add(key)
        return False

    flaky.failing = failing
    job = await ingest.wait(await ingest.submit(noise_images(4)), timeout=30)
    assert job.state == "failed" and job.error is not None and job.error.code == "store_unavailable"
    assert job.error.retryable and job.progress["attempts"] == 3
    assert ingest.metric("requeues_total") == 2
    assert result_of(job).stored == 2, "what an earlier attempt stored is listed"
    assert len(await Catalog(flaky.inner).records()) == 2
    assert await staged_left(flaky.inner, job.job_id) == []


async def test_an_attempt_resumes_after_the_files_an_earlier_one_handled(make_ingest: MakeIngest,
                                                                        tmp_path: object) -> None:
    flaky = FlakyStore(await open_store(f"file://{tmp_path}/store"))
    ingest = await make_ingest(store=flaky, progress_every_s=0, store_retry_s=0.1, store_retry_first_s=0.05)
    files = noise_images(4)
    reads: list[str] = []

    def failing(op: str, key: str) -> bool:  # the third staged file cannot be read, once
        if op == "get" and key.startswith("uploads/"):
            reads.append(key)
            return key.endswith("00002") and reads.count(key) <= 2
        return False

    flaky.failing = failing
    job = await ingest.wait(await ingest.submit(files), timeout=30)
    assert job.state == "succeeded", job.error
    assert job.progress["attempts"] == 2
    assert [o.index for o in result_of(job).files] == [0, 1, 2, 3]
    assert [k.rsplit("/",
                     1)[-1] for k in reads].count("00000") == 1, "the second attempt skipped handled files"
    assert await staged_left(flaky.inner, job.job_id) == []


async def test_staged_uploads_go_as_their_files_are_handled(make_ingest: MakeIngest,
                                                            tmp_path: object) -> None:
    flaky = FlakyStore(await open_store(f"file://{tmp_path}/store"))
    ingest = await make_ingest(store=flaky, progress_every_s=0)
    left_when_reading: list[int] = []
    original_get = flaky.get

    async def get(key: str) -> bytes:
        if key.startswith("uploads/"):
            left_when_reading.append(len(await flaky.inner.list(key.rsplit("/", 1)[0] + "/")))
        return await original_get(key)

    flaky.get = get  # type: ignore[method-assign]  # spying on the reads is the point
    job = await ingest.wait(await ingest.submit(noise_images(4)))
    assert job.state == "succeeded"
    assert left_when_reading == [4, 3, 2, 1]
    assert await staged_left(flaky.inner, job.job_id) == []


async def test_a_job_delivered_more_often_than_its_attempt_limit_fails_without_running(
        make_ingest: MakeIngest) -> None:
    ingest = await make_ingest(max_attempts=2)
    [(name, data)] = noise_images(1)
    # the record of a job whose process died mid-job twice; its message comes a third time
    job = Job(kind="ingest", state="running", progress={"files": 1, "done": 0, "attempts": 2},
              result=IngestResult())
    await JobStore(ingest.store).save(job)
    key = f"uploads/{job.job_id}/00000"
    await ingest.store.put(key, data)
    request = IngestRequest(job_id=job.job_id, files=[StagedFile(key=key, filename=name, size=len(data))])
    await ingest.bus.publish(ingest.service.settings.ingest_queue, encode(request))
    failed = await ingest.wait(job.job_id)
    assert failed.state == "failed" and failed.error is not None and failed.error.code == "too_many_attempts"
    assert result_of(failed).stored == 0 and result_of(failed).unprocessed == 1
    assert await Catalog(ingest.store).records() == []
    assert await staged_left(ingest.store, job.job_id) == []


async def test_images_are_cleaned_within_the_decode_budget(make_ingest: MakeIngest) -> None:
    """Cleaning decodes each image whole, so it holds the service's decode budget as predictions'
    decoding holds the workers': while other decodes take all of it, an image waits its turn,
    then is stored, and the budget is free again."""
    ingest = await make_ingest(clean_budget_bytes=32 * 2**20)
    image = io.BytesIO()
    Image.new("RGB", (1500, 1000), (150, 90, 70)).save(image, format="PNG")  # 3 copies: 18 MB
    budget = ingest.service.decode_budget
    with budget.hold(budget.limit_bytes):  # other decodes hold it all
        job_id = await ingest.submit([("melanoma_large.png", image.getvalue())])
        with pytest.raises(TimeoutError):
            await ingest.wait(job_id, timeout=1)
    job = await ingest.wait(job_id)
    assert outcomes_by_name(job)["melanoma_large.png"]["status"] == "stored", job
    assert budget.held_bytes == 0
