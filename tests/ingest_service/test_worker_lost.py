"""An upload the gateway reported failed as `worker_lost` is not over: the ingest service was cut
from RabbitMQ mid-job (real RabbitMQ behind a TCP proxy the test cuts), stayed silent past the
staleness limit, and when the broker redelivers the job it resumes where it stopped and ends
succeeded, every image stored once."""

from __future__ import annotations

import asyncio

import pytest

from shared.bus import connect_bus
from shared.catalog import Catalog
from shared.jobs import IngestResult, Job, JobStore
from shared.messages import IngestRequest, StagedFile, encode
from shared.store import ObjectStore, open_store
from tests.ingest_service.conftest import FlakyStore, MakeIngest, noise_images, result_of
from tests.support.tcp import Proxy

pytestmark = pytest.mark.timeout(60)


class PausingStore(FlakyStore):
    """The first read of `pause_at` waits: the service is busy there when the broker goes.
    `paused` is set when it gets there, `cancelled` when the wait is cancelled (the bus cancels
    a handler whose channel closed)."""

    def __init__(self, inner: ObjectStore, pause_at: str) -> None:
        super().__init__(inner)
        self.pause_at, self.paused, self.cancelled = pause_at, asyncio.Event(), asyncio.Event()

    async def get(self, key: str) -> bytes:
        if key.endswith(self.pause_at) and not self.paused.is_set():
            self.paused.set()
            try:
                await asyncio.Event().wait()  # until the handler is cancelled
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return await super().get(key)


async def until(jobs: JobStore, job_id: str, state: str, timeout: float = 30) -> Job:
    deadline = asyncio.get_running_loop().time() + timeout
    while (job := await jobs.get(job_id)).state != state:
        assert asyncio.get_running_loop().time() < deadline, f"not {state} after {timeout} s: {job.log}"
        await asyncio.sleep(0.05)
    return job


async def test_an_upload_reported_worker_lost_during_a_broker_cut_resumes_on_redelivery(
        make_ingest: MakeIngest, rabbit_url: str, unique: str, tmp_path: object) -> None:
    proxy = Proxy.before(rabbit_url)
    await proxy.up()
    bus = await connect_bus(proxy.reroute(rabbit_url))
    store = PausingStore(await open_store(f"file://{tmp_path}/store"), pause_at="/00003")
    try:
        ingest = await make_ingest(store=store, bus=bus, ingest_queue=f"{unique}.ingest", progress_every_s=0)
        jobs = JobStore(ingest.direct)  # the gateway's view
        job_id = await ingest.submit(noise_images(6))
        await asyncio.wait_for(store.paused.wait(), 10)  # files 0-2 handled and saved
        await proxy.down()
        await asyncio.wait_for(store.cancelled.wait(), 10)  # the service stopped with the channel

        await asyncio.sleep(0.3)
        lost = await jobs.load(job_id, stale_after_s=0.2)  # a GET /jobs/{id} during the outage
        assert lost.state == "failed" and lost.error is not None and lost.error.code == "worker_lost"
        assert sorted(await ingest.direct.list(f"uploads/{job_id}/")) == [
            f"uploads/{job_id}/{slot:05d}" for slot in (3, 4, 5)], "the observer deletes no staged file"

        await proxy.up()  # the bus reconnects, the broker redelivers the unacknowledged job
        job = await until(jobs, job_id, "succeeded")
        result = result_of(job)
        assert (result.stored, result.duplicate, result.rejected) == (6, 0, 0)
        assert [o.index for o in result.files] == list(range(6)), "each file once"
        assert job.error is None and job.progress["attempts"] == 2
        assert any("resumed: the ingest service got the job again after it was reported worker_lost; "
                   "continuing after the 3 of 6 files already handled" in line for line in job.log), job.log
        assert ingest.metric("resumes_total") == 1
        catalogued = await Catalog(ingest.direct).records()
        assert sorted(r.sha256 for r in catalogued) == sorted(o.sha256 for o in result.files if o.sha256)
        assert len(await ingest.direct.list("images/")) == 6, "each image stored once"
        for _ in range(100):  # staged uploads go right after the final record
            if not await ingest.direct.list(f"uploads/{job_id}/"):
                break
            await asyncio.sleep(0.05)
        assert await ingest.direct.list(f"uploads/{job_id}/") == []
        assert (await bus.queue_stats(f"{unique}.ingest.dead")).messages == 0
    finally:
        await proxy.close()


async def test_a_job_failed_by_its_service_or_lost_with_its_files_gone_is_not_run_again(
        make_ingest: MakeIngest) -> None:
    ingest = await make_ingest()
    jobs = JobStore(ingest.store)
    [(name, data)] = noise_images(1)
    failed_by_service = Job(kind="ingest", progress={"files": 1, "done": 0}, result=IngestResult())
    failed_by_service.fail("store_unavailable", "the store stayed down", 503, retryable=True)
    await jobs.save(failed_by_service)
    await ingest.store.put(f"uploads/{failed_by_service.job_id}/00000", data)  # still staged
    staging_gone = await jobs.save(Job(kind="ingest", state="running", progress={"files": 1, "done": 0},
                                       result=IngestResult()))
    await asyncio.sleep(0.05)
    assert (await jobs.load(staging_gone.job_id, stale_after_s=0.01)).lost  # and nothing staged
    before = {job.job_id: await jobs.get(job.job_id) for job in (failed_by_service, staging_gone)}
    for job_id in before:  # their messages come again
        staged = StagedFile(key=f"uploads/{job_id}/00000", filename=name, size=len(data))
        await ingest.bus.publish(ingest.service.settings.ingest_queue,
                                 encode(IngestRequest(job_id=job_id, files=[staged])))
    after = await ingest.wait(await ingest.submit(noise_images(1, first_seed=7)))  # one at a time, in order
    assert after.state == "succeeded"
    assert await jobs.get(failed_by_service.job_id) == before[failed_by_service.job_id], "left as it was"
    gone = await jobs.get(staging_gone.job_id)  # no longer resumable, and it says so: pollers stop waiting
    assert gone.state == "failed" and gone.error is not None
    assert (gone.error.code, gone.error.retryable, gone.lost) == ("staged_files_gone", False, False)
    assert [r.job_id for r in await Catalog(ingest.store).records()] == [after.job_id]
    assert ingest.metric("resumes_total") == 0
