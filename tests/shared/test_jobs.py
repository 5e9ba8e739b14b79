"""Job records as every service sees them: saved to the object store, read back by any gateway,
every write conditional on the version its writer read (on local disk and S3 alike)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.errors import NotFound
from shared.jobs import (
    WORKER_LOST,
    FileOutcome,
    IngestResult,
    Job,
    JobChanged,
    JobKind,
    JobState,
    JobStore,
    TrainResult,
    recover_unfinished,
)
from shared.messages import ErrorInfo
from shared.store import ObjectStore, open_store
from shared.training_claim import TRAINING_CLAIMS, claim_training, training_holder
from shared.verdict import GateResult

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


async def test_an_ingest_result_reads_back_typed_and_its_json_lists_only_what_applies(tmp_path: Path) -> None:
    jobs = JobStore(await open_store(tmp_path.as_uri()))
    files = [FileOutcome(index=1, filename="melanoma_1.jpg", status="stored", sha256="ab", label="melanoma",
                         key="images/melanoma/ab.jpg", split="train"),
             FileOutcome(index=0, filename="big.jpg", status="rejected", reason="too_large",
                         message="over 20 MB")]
    job = await jobs.save(Job(kind="ingest", result=IngestResult.of(files, unprocessed=2)))

    again = await jobs.get(job.job_id)
    assert isinstance(again.result, IngestResult) and again.result == job.result
    assert (again.result.stored, again.result.duplicate, again.result.rejected) == (1, 0, 1)
    body = again.model_dump(mode="json")["result"]
    assert [o["index"] for o in body["files"]] == [0, 1], "outcomes are listed by index"
    assert body["files"][0] == {"index": 0, "filename": "big.jpg", "status": "rejected",
                                "reason": "too_large",
                                "message": "over 20 MB"}
    assert "reason" not in body["files"][1] and body["files"][1]["split"] == "train"
    assert body["unprocessed"] == 2
    assert "unprocessed" not in IngestResult.of(files).model_dump(mode="json"), "only a failed job has it"


def test_a_job_refuses_a_result_of_the_other_kind() -> None:
    gate = GateResult(passed=True, reasons=[], candidate_balanced_accuracy=0.8,
                      current_balanced_accuracy=None)
    trained = TrainResult(version="v1", gate=gate, classes=["melanoma"], balanced_accuracy=0.8,
                          per_class_recall={"melanoma": 0.8})
    assert Job(kind="train", result=trained).result == trained
    with pytest.raises(ValidationError, match="the result of an? ingest job must be IngestResult"):
        Job(kind="ingest", result=trained)
    with pytest.raises(ValidationError):
        Job.model_validate({"kind": "train", "result": {"files": []}})


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


@pytest.mark.parametrize("state", ["succeeded", "failed", "rejected", "cancelled"])
async def test_every_final_state_is_final(tmp_path: Path, state: JobState) -> None:
    jobs = JobStore(await open_store(tmp_path.as_uri()))
    job = await jobs.save(Job(kind="ingest", state=state))
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
    await store.put(f"{TRAINING_CLAIMS}0000000001.json", b'{"job_id": "abc"}')  # a claim, not a job
    jobs = JobStore(store)
    with pytest.raises(NotFound):
        await jobs.get(job_id)
    assert not await jobs.exists(job_id)


@pytest.fixture
async def store(tmp_path: Path) -> ObjectStore:
    return await open_store(tmp_path.as_uri())


async def silent_job(jobs: JobStore, kind: JobKind) -> Job:
    """A running job of `kind` whose service last reported 2 minutes ago."""
    job = await jobs.save(Job(kind=kind, state="running"))
    job.updated_at -= dt.timedelta(seconds=120)
    await jobs.store.put(f"jobs/{job.job_id}.json", job.model_dump_json().encode())
    return job


async def test_a_silent_ingest_job_is_reported_lost_and_resumable_a_training_job_only_lost(
        store: ObjectStore) -> None:
    jobs = JobStore(store)
    upload = await silent_job(jobs, "ingest")
    lost = await jobs.load(upload.job_id, stale_after_s=60)
    assert lost.lost and lost.final and lost.finished_at is not None
    assert lost.error is not None and lost.error.retryable, "a poller may see it resume"
    assert lost.resumable
    assert "resumes where it stopped" in lost.error.message
    assert (await jobs.get(upload.job_id)).lost, "saved as failed"

    lost.resume("the ingest service got the job again")
    await jobs.save(lost)
    again = await jobs.load(upload.job_id, stale_after_s=60)  # fresh: not silent any more
    assert again.state == "running" and again.error is None and again.finished_at is None
    assert not again.final and again.log[-1].endswith("resumed: the ingest service got the job again")

    training = await jobs.load((await silent_job(jobs, "train")).job_id, stale_after_s=60)
    assert training.lost and training.error is not None and not training.error.retryable
    assert not training.resumable


def test_only_a_job_reported_lost_resumes() -> None:
    for job in (Job(kind="ingest", state="running"), Job(kind="ingest", state="succeeded")):
        with pytest.raises(ValueError, match="only a worker_lost job resumes"):
            job.resume("again")
    failed_by_its_service = Job(kind="ingest")
    failed_by_its_service.fail("store_unavailable", "the store stayed down", 503, retryable=True)
    assert not failed_by_its_service.lost and not failed_by_its_service.resumable
    with pytest.raises(ValueError):
        failed_by_its_service.resume("again")


async def test_recovery_fails_training_and_lost_uploads_and_leaves_queued_uploads(store: ObjectStore) -> None:
    jobs = JobStore(store)
    training = Job(kind="train", state="running")
    assert await claim_training(jobs, training, stale_after_s=3600) is None
    queued_upload, lost_upload, done = Job(kind="ingest"), Job(kind="ingest",
                                                               state="running"), Job(kind="ingest")
    done.state = "succeeded"
    for job in (queued_upload, lost_upload, done):
        await jobs.save(job)
    failed = await recover_unfinished(jobs, still_queued={queued_upload.job_id})
    assert sorted(j.job_id for j in failed) == sorted([training.job_id, lost_upload.job_id])
    for job_id in (training.job_id, lost_upload.job_id):
        job = await jobs.get(job_id)
        assert job.state == "failed" and job.error is not None and job.error.code == "interrupted"
    error = (await jobs.get(training.job_id)).error
    assert error is not None and "POST /retrain" in error.message
    assert (await jobs.get(queued_upload.job_id)).state == "queued"
    assert await training_holder(jobs, stale_after_s=3600) is None  # the claim is free again


async def test_a_copy_read_before_another_write_cannot_overwrite_it(either_store: ObjectStore) -> None:
    """The race of issue 23: a trainer's copy of its running job against an observer's verdict."""
    jobs = JobStore(either_store)
    trainer_copy = await jobs.save(Job(kind="train", state="running"))
    observer_copy = await jobs.get(trainer_copy.job_id)
    observer_copy.fail(WORKER_LOST, "no progress for 61 s")
    await jobs.save(observer_copy)

    trainer_copy.state = "succeeded"
    with pytest.raises(JobChanged) as changed:
        await jobs.save(trainer_copy)
    assert changed.value.status == 409
    assert changed.value.current is not None and changed.value.current.lost
    stored = await jobs.get(trainer_copy.job_id)
    assert stored.lost and stored.finished_at is not None, "the verdict stands"

    stored.state, stored.error = "succeeded", None  # even a fresh copy cannot change a final outcome
    with pytest.raises(JobChanged, match="outcome stays"):
        await jobs.save(stored)
    with pytest.raises(JobChanged):  # nor can a new record with a taken id
        await jobs.save(Job(job_id=trainer_copy.job_id, kind="train", state="succeeded"))
    assert (await jobs.get(trainer_copy.job_id)).lost


async def test_an_observers_verdict_loses_to_the_write_of_a_service_still_at_work(
        either_store: ObjectStore) -> None:
    jobs = JobStore(either_store)
    training = await jobs.save(Job(kind="train", state="running"))
    observed = await jobs.get(training.job_id)  # an observer reads it and finds it silent...
    await jobs.save(training)  # ...the trainer reports progress...
    observed.fail(WORKER_LOST, "no progress for 61 s")
    with pytest.raises(JobChanged):  # ...and the verdict is not written
        await jobs.save(observed)
    assert (await jobs.get(training.job_id)).state == "running"

    upload = await jobs.save(Job(kind="ingest", state="running"))
    reported = await jobs.get(upload.job_id)
    reported.fail(WORKER_LOST, "no progress for 61 s", retryable=True)
    await jobs.save(reported)
    upload.progress = {"done": 3}  # the ingest service was only slow: its write resumes the upload
    await jobs.save(upload)
    resumed = await jobs.get(upload.job_id)
    assert resumed.state == "running" and resumed.progress == {"done": 3}
    assert "still at work on it" in resumed.log[-1]
