"""The one training claim: taken atomically, freed when its job ends, is lost, never started or
is cancelled."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from shared.errors import Conflict
from shared.jobs import Job, JobStore
from shared.store import ObjectStore, open_store
from shared.training_claim import cancel_training, claim_training, training_holder

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def store(tmp_path: Path) -> ObjectStore:
    return await open_store(tmp_path.as_uri())


async def test_of_six_concurrent_training_claims_exactly_one_wins(store: ObjectStore) -> None:
    gateways = [JobStore(store) for _ in range(6)]
    jobs = [Job(kind="train") for _ in gateways]
    holders = await asyncio.gather(*(claim_training(g, j, stale_after_s=60)
                                     for g, j in zip(gateways, jobs, strict=True)))
    winners = [job for job, holder in zip(jobs, holders, strict=True) if holder is None]
    assert len(winners) == 1
    assert {holder.job_id for holder in holders if holder is not None} == {winners[0].job_id}
    unfinished = await JobStore(store).unfinished()
    assert [j.job_id for j in unfinished] == [winners[0].job_id], "the losers left nothing"


async def test_the_claim_is_free_once_its_job_is_final(store: ObjectStore) -> None:
    jobs = JobStore(store)
    first = Job(kind="train")
    assert await claim_training(jobs, first, stale_after_s=60) is None
    blocked = await claim_training(jobs, Job(kind="train"), stale_after_s=60)
    assert blocked is not None and blocked.job_id == first.job_id
    first.state = "succeeded"
    await jobs.save(first)  # the trainer finishing the job releases the claim
    assert await training_holder(jobs, stale_after_s=60) is None
    assert await claim_training(jobs, Job(kind="train"), stale_after_s=60) is None


async def test_a_claim_whose_job_is_missing_or_silent_is_taken_over(store: ObjectStore) -> None:
    jobs = JobStore(store)
    lost = Job(kind="train")
    assert await claim_training(jobs, lost, stale_after_s=60) is None
    await jobs.delete(lost.job_id)  # its record is gone
    running = Job(kind="train")
    assert await claim_training(jobs, running, stale_after_s=60) is None
    running.state = "running"
    await jobs.save(running)
    running.updated_at = running.updated_at - dt.timedelta(seconds=120)  # the trainer died 2 min ago
    await store.put(f"jobs/{running.job_id}.json", running.model_dump_json().encode())
    assert await claim_training(jobs, Job(kind="train"), stale_after_s=60) is None
    silent = await jobs.get(running.job_id)
    assert silent.state == "failed" and silent.error is not None and silent.error.code == "worker_lost"


async def test_a_claim_held_by_a_job_no_trainer_ever_started_is_taken_over(store: ObjectStore) -> None:
    """A gateway that stopped between claiming and publishing leaves a queued job nobody will run."""
    jobs = JobStore(store)
    orphan = Job(kind="train")
    assert await claim_training(jobs, orphan, stale_after_s=60, queued_stale_after_s=900) is None
    # soon after, it is the holder: a trainer may be about to take it
    blocked = await claim_training(jobs, Job(kind="train"), stale_after_s=60, queued_stale_after_s=900)
    assert blocked is not None and blocked.job_id == orphan.job_id
    orphan.created_at -= dt.timedelta(seconds=1000)  # queued for 16 minutes, never started
    await store.put(f"jobs/{orphan.job_id}.json", orphan.model_dump_json().encode())
    assert await claim_training(jobs, Job(kind="train"), stale_after_s=60, queued_stale_after_s=900) is None
    expired = await jobs.get(orphan.job_id)
    assert expired.state == "failed" and expired.error is not None and expired.error.code == "not_started"
    assert "model is unchanged" in expired.error.message


async def test_cancelling_a_training_job_ends_it_and_frees_the_claim(either_store: ObjectStore) -> None:
    jobs = JobStore(either_store)
    job = Job(kind="train")
    assert await claim_training(jobs, job, stale_after_s=60) is None
    cancelled = await cancel_training(jobs, job.job_id, why="by ops", stale_after_s=60)
    assert cancelled.state == "cancelled" and cancelled.final and cancelled.finished_at is not None
    assert cancelled.error is not None and cancelled.error.code == "cancelled"
    assert await training_holder(jobs, stale_after_s=60) is None, "the claim is free at once"
    with pytest.raises(Conflict) as again:
        await cancel_training(jobs, job.job_id, why="twice", stale_after_s=60)
    assert again.value.code == "job_over"

    promoting = Job(kind="train", state="running", progress={"phase": "promoting"})
    assert await claim_training(jobs, promoting, stale_after_s=60) is None
    with pytest.raises(Conflict) as late:
        await cancel_training(jobs, promoting.job_id, why="late", stale_after_s=60)
    assert late.value.code == "too_late"
    upload = await jobs.save(Job(kind="ingest"))
    with pytest.raises(Conflict) as upload_refused:
        await cancel_training(jobs, upload.job_id, why="no", stale_after_s=60)
    assert upload_refused.value.code == "not_cancellable"
