"""Job records as every service sees them: saved to the object store, read back by any gateway."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import NotFound
from shared.jobs import ACTIVE_TRAINING_KEY, Job, JobStore
from shared.messages import ErrorInfo
from shared.store import open_store

pytestmark = pytest.mark.timeout(30)


async def test_a_saved_job_reads_back_from_another_job_store_on_the_same_store(tmp_path: Path) -> None:
    jobs = JobStore(await open_store(tmp_path.as_uri()))
    job = await jobs.save(Job(kind="ingest", progress={"files": 3}))
    assert job.state == "queued" and job.job_id.isalnum()

    after_a_restart = JobStore(await open_store(tmp_path.as_uri()))
    again = await after_a_restart.get(job.job_id)
    assert again == job
    assert again.progress == {"files": 3} and again.result is None and again.error is None
    assert await after_a_restart.exists(job.job_id)


async def test_saving_stamps_the_times_of_each_step_once(tmp_path: Path) -> None:
    jobs = JobStore(await open_store(tmp_path.as_uri()))
    job = await jobs.save(Job(kind="train"))
    assert job.started_at is None and job.finished_at is None and not job.final

    job.state = "running"
    first_update = job.updated_at
    await jobs.save(job)
    started = job.started_at
    assert started is not None and job.updated_at >= first_update
    job.progress = {"epoch": 1}
    await jobs.save(job)
    assert job.started_at == started  # not moved by later saves
    assert job.finished_at is None

    job.state = "failed"
    job.error = ErrorInfo(code="training_failed", status=500, message="out of memory")
    await jobs.save(job)
    finished = job.finished_at
    assert job.final and finished is not None and finished >= started
    job.note("operator looked at it")
    await jobs.save(job)
    stored = await jobs.get(job.job_id)
    assert stored.finished_at == finished and stored.started_at == started
    assert stored.error is not None and stored.error.message == "out of memory"
    assert stored.log[-1].endswith(" operator looked at it")


@pytest.mark.parametrize("state", ["succeeded", "failed", "rejected"])
async def test_every_final_state_is_final(tmp_path: Path, state: str) -> None:
    jobs = JobStore(await open_store(tmp_path.as_uri()))
    job = await jobs.save(Job(kind="ingest", state=state))  # type: ignore[arg-type]
    assert job.final and job.finished_at == job.updated_at


async def test_an_unknown_job_is_not_found(tmp_path: Path) -> None:
    jobs = JobStore(await open_store(tmp_path.as_uri()))
    with pytest.raises(NotFound):
        await jobs.get("0123456789abcdef0123456789abcdef")
    assert not await jobs.exists("0123456789abcdef0123456789abcdef")


@pytest.mark.parametrize("job_id", ["../secrets", "a/b", "", "active-train", "x.json"])
async def test_ids_that_could_not_be_job_keys_are_not_found_rather_than_bad_requests(
        tmp_path: Path, job_id: str) -> None:
    store = await open_store(tmp_path.as_uri())
    await store.put(ACTIVE_TRAINING_KEY, b'{"job_id": "abc"}')  # a pointer, not a job
    jobs = JobStore(store)
    with pytest.raises(NotFound):
        await jobs.get(job_id)
    assert not await jobs.exists(job_id)
