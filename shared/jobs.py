"""Long-running jobs (ingest and training): one JSON shape, stored durably in the object store.

A job lives at `jobs/<job_id>.json`. Every service that works on a job updates that record, so
any gateway (also after a restart) answers `GET /jobs/{id}` from the store.

One training at a time is `shared.training_claim`'s rule: a training job holds the claim until
it is final.

Every write of a record is conditional (`ObjectStore.put_if`): a copy of a job carries the version
it was read or last saved as, and `JobStore.save` refuses (JobChanged) when somebody else wrote the
record since (an observer's `worker_lost`, an operator's cancel), so a service never overwrites a
verdict it has not seen, and a final outcome is never changed.

Markers beside the records (`shared.job_index`) say which jobs are live and on which day each
ended: the embedded start reads only the live ones (`JobStore.unfinished`), and a `JobStore` given
a retention forgets jobs that ended longer ago (arq's `keep_result`): `get` answers NotFound for one
(and deletes it), `sweep_expired` deletes them a day of endings at a time.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from shared.catalog import Split
from shared.errors import Conflict, NotFound
from shared.job_index import JobIndex, day_end
from shared.manifest import utcnow
from shared.messages import ErrorInfo, new_id
from shared.store import ObjectStore, VersionMismatch
from shared.verdict import GateResult

JobKind = Literal["ingest", "train"]
JobState = Literal["queued", "running", "succeeded", "failed", "rejected", "cancelled"]
FileStatus = Literal["stored", "duplicate", "rejected"]
FINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "rejected", "cancelled"})
#: The error code of a running job an observer (`JobStore.load`) failed because it went silent:
#: a guess that its service is gone, not that service's verdict. An ingest service delivered the
#: job's message again resumes it (`Job.resume`); a trainer does not (`JobStore.load`).
WORKER_LOST = "worker_lost"
#: The error code of a job an operator cancelled (`shared.training_claim.cancel_training`).
CANCELLED = "cancelled"


class JobChanged(Conflict):
    """A job's record changed since this copy of it was read or saved (another writer came first:
    an observer reported it `worker_lost`, an operator cancelled it), or the copy would change the
    outcome of a final record. `current` is the record now, when known (None: gone or not read).
    Nothing was written: read the job again and decide again."""

    default_code = "job_changed"

    def __init__(self, message: str, *, current: Job | None = None) -> None:
        super().__init__(message)
        self.current = current


def _absent(value: object) -> bool:
    return value is None


class FileOutcome(BaseModel):
    """What became of one uploaded file or archive member: the one shape of the gateway's own
    rejections (too large) and the ingest service's outcomes. Fields that do not apply to the
    status are left out of the JSON (a stored file has no `reason`)."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(description="Position in the upload; archive members are numbered after the files.")
    filename: str = Field(description="Name the client gave it; 'archive.zip:folder/name.jpg' for a member.")
    status: FileStatus = Field(description="stored, duplicate or rejected.")
    reason: str | None = Field(None, exclude_if=_absent,
                               description="Rejected: the stable error code, e.g. 'corrupt_image'.")
    message: str | None = Field(None, exclude_if=_absent, description="Rejected or duplicate: why, in words.")
    sha256: str | None = Field(None, exclude_if=_absent,
                               description="Hash of the cleaned image (stored or duplicate).")
    label: str | None = Field(None, exclude_if=_absent,
                              description="The class it is stored under (a duplicate: the earlier one's).")
    key: str | None = Field(None, exclude_if=_absent, description="Stored: the object key of the image.")
    split: Split | None = Field(None, exclude_if=_absent, description="Stored: 'train' or 'eval'.")


class IngestResult(BaseModel):
    """The result of an ingest job: every file's outcome and the counts per status."""

    model_config = ConfigDict(extra="forbid")

    files: list[FileOutcome] = Field(default_factory=list, description="Every outcome, by index.")
    stored: int = Field(0, description="Files stored (and catalogued for training).")
    duplicate: int = Field(0, description="Files whose image was already stored.")
    rejected: int = Field(0, description="Files rejected, each with its reason.")
    unprocessed: int | None = Field(None, exclude_if=_absent,
                                    description="A failed job: staged files never handled.")

    @classmethod
    def of(cls, files: list[FileOutcome], *, unprocessed: int | None = None) -> IngestResult:
        """The result listing `files` by index, with their counts per status."""
        tally = Counter(o.status for o in files)
        return cls(files=sorted(files, key=lambda o: o.index), stored=tally["stored"],
                   duplicate=tally["duplicate"], rejected=tally["rejected"], unprocessed=unprocessed)


class TrainResult(BaseModel):
    """The result of a training job that produced a candidate (promoted or rejected by the gate)."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(description="Registry version of the candidate.")
    gate: GateResult = Field(description="The promotion gate's verdict on it.")
    classes: list[str] = Field(description="Classes of the candidate, in output order.")
    balanced_accuracy: float = Field(description="Balanced accuracy on the held-out split.")
    per_class_recall: dict[str, float | None] = Field(
        description="Class -> held-out recall (None: no images).")
    training_seconds: float | None = Field(None, description="Wall time of the training run.")
    promoted: bool = Field(False, description="Whether it became the current model.")


class Job(BaseModel):
    """The status of one job as `GET /jobs/{id}` returns it."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(default_factory=new_id, description="Unique id.")
    kind: JobKind = Field(description="'ingest' or 'train'.")
    state: JobState = Field("queued",
                            description="queued, running, succeeded, failed, rejected or cancelled.")
    progress: dict[str, Any] = Field(default_factory=dict, description="Kind-specific progress.")
    result: IngestResult | TrainResult | None = Field(
        None, description="Outcome: an ingest job's file outcomes (also while running), a training job's "
                          "candidate once it has one.")
    error: ErrorInfo | None = Field(None, description="Why it failed or was rejected.")
    log: list[str] = Field(default_factory=list, description="Human-readable log lines.")
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    #: The record's version in the store when this copy was read or last saved (None: never
    #: stored), and the outcome (state, error) it must keep because that record was final.
    _version: str | None = PrivateAttr(None)
    _sealed: tuple[str, ErrorInfo | None] | None = PrivateAttr(None)
    #: Whether that record was final, and marked live (`shared.job_index`).
    _stored_final: bool = PrivateAttr(False)
    _stored_live: bool = PrivateAttr(False)

    @model_validator(mode="after")
    def _result_of_its_kind(self) -> Job:
        expected = IngestResult if self.kind == "ingest" else TrainResult
        if self.result is not None and not isinstance(self.result, expected):
            raise ValueError(f"the result of a {self.kind} job must be {expected.__name__}")
        return self

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def note(self, line: str) -> None:
        """Append a timestamped log line."""
        self.log.append(f"{time.strftime('%H:%M:%S')} {line}")

    @property
    def lost(self) -> bool:
        """Failed by an observer as `worker_lost` (silent too long), not by its own service."""
        return self.state == "failed" and self.error is not None and self.error.code == WORKER_LOST

    @property
    def resumable(self) -> bool:
        """Lost with a `retryable` error: an upload its service resumes when it gets the job's
        message again (`resume`); a lost training job is not (its claim is free)."""
        return self.lost and self.error is not None and self.error.retryable

    def fail(self, code: str, message: str, status: int = 500, *, retryable: bool = False) -> None:
        """Make the job failed with `code` and `message`, and say so in its log."""
        self.state = "failed"
        self.error = ErrorInfo(code=code, status=status, message=message, retryable=retryable)
        self.note(f"failed: {message}")

    def cancel(self, why: str) -> None:
        """Make the job cancelled (final), saying `why` in its error and its log."""
        self.state = "cancelled"
        self.error = ErrorInfo(code=CANCELLED, status=409, message=why)
        self.note(f"cancelled: {why}")

    def resume(self, why: str) -> None:
        """Make a job an observer failed as lost (`lost`) running again, saying `why` in its log:
        its service has its message again, which proves the work is still to be done. Raises
        ValueError for any other job."""
        if not self.lost:
            raise ValueError(f"only a {WORKER_LOST} job resumes, not a {self.state} one")
        self.state, self.error, self.finished_at = "running", None, None
        self.note(f"resumed: {why}")


def _key(job_id: str) -> str:
    return f"jobs/{job_id}.json"


def _sealed(job: Job) -> tuple[str, ErrorInfo | None] | None:
    """The outcome a save of `job` must keep: that of a final record, unless it is an upload
    reported lost, which its service may still resume."""
    return (job.state, job.error) if job.final and not job.resumable else None


def _live(job: Job) -> bool:
    """Whether `job` is marked live: not final, or an upload reported lost that may resume."""
    return not job.final or job.resumable


def _stored(job: Job, version: str) -> Job:
    """`job`, noted as what the store holds at `version`."""
    job._version, job._sealed = version, _sealed(job)
    job._stored_final, job._stored_live = job.final, _live(job)
    return job


#: Days of endings one `sweep_expired` deletes at most (a backlog goes at the next sweeps).
SWEEP_DAYS = 7
#: A live marker whose record is missing this long after it was marked is dropped: the write
#: that marked it stopped before the record.
_ORPHAN_MARKER_S = 3600.0


class JobStore:
    """Reads and writes job records. Loop-only. With `retention_s` (None or 0: forever), a job
    that ended longer ago is gone: `get` raises NotFound for it, `sweep_expired` deletes them."""

    def __init__(self, store: ObjectStore, *, retention_s: float | None = None) -> None:
        self.store, self.retention_s = store, retention_s or None
        self.index = JobIndex(store)

    def _expired(self, job: Job, now: dt.datetime) -> bool:
        ended = job.finished_at or job.updated_at
        return (self.retention_s is not None and job.final
                and now - ended > dt.timedelta(seconds=self.retention_s))

    async def _read(self, job_id: str) -> Job:
        data, version = await self.store.get_versioned(_key(job_id))
        return _stored(Job.model_validate_json(data), version)

    async def get(self, job_id: str) -> Job:
        """The job, carrying the version `save` writes over; raises NotFound (also for ids that
        could not be keys, and for a job that ended longer than the retention ago, which it then
        deletes)."""
        if not job_id.isalnum():
            raise NotFound(f"no job {job_id!r}")
        job = await self._read(job_id)
        if self._expired(job, utcnow()):
            await self.delete(job_id)
            raise NotFound(f"no job {job_id!r}")
        return job

    async def load(self, job_id: str, *, stale_after_s: float) -> Job:
        """The job, with a running job silent for over `stale_after_s` turned into (and saved
        as) a failed one, code `worker_lost`: its service stopped while running it (the claim of
        a training job is then free). Raises NotFound.

        For an ingest job that is a guess, not the end: its message is still unacknowledged, and
        the ingest service it is delivered to again (a broker outage, a restart) resumes it where
        it stopped, so its error says `retryable` and the state may go back to running. A training
        job stays failed: its claim was released, so a redelivered one must not train beside a
        newer claim's job (the trainer acknowledges it without running it); the model is unchanged."""
        job = await self.get(job_id)
        silent = utcnow() - job.updated_at
        if job.state == "running" and silent > dt.timedelta(seconds=stale_after_s):
            resumes = job.kind == "ingest"
            job.fail(WORKER_LOST, f"no progress for {silent.total_seconds():.0f} s: the {job.kind} service "
                                  "stopped while running it"
                                  + ("; it resumes where it stopped if the service gets the job again"
                                     if resumes else ""), retryable=resumes)
            try:
                await self.save(job)
            except JobChanged:  # its service (or a cancel) wrote meanwhile: that record stands
                return await self.get(job_id)
        return job

    async def save(self, job: Job) -> Job:
        """Write `job` over the record this copy was read (or last saved) as; a new job only if
        it has no record yet. Stamps its times and returns it, carrying the new version.

        Raises JobChanged, writing nothing, when the record changed since (another writer came
        first), or when the copy would change the state or error of a final record (its log may
        grow). One exception, for uploads: a record an observer failed as `worker_lost` with a
        retryable error (`Job.resumable`) is replaced by a write of the job's own service, which
        is evidently still at work on it (the job's log says so), as a redelivery resumes it."""
        if job._sealed is not None and (job.state, job.error) != job._sealed:
            raise JobChanged(f"job {job.job_id} is {job._sealed[0]}: a finished job's outcome stays")
        job.updated_at = utcnow()
        if job.state == "running" and job.started_at is None:
            job.started_at = job.updated_at
        if job.final and job.finished_at is None:
            job.finished_at = job.updated_at
        live, ends = _live(job), job.final and not job._stored_final
        if live and not job._stored_live:
            await self.index.mark_live(job.job_id)  # first: a live record is never unmarked
        try:
            version = await self._put(job, job._version)
        except VersionMismatch:
            current = await self._current(job.job_id)
            if current is None or not current.resumable or job.resumable:
                raise JobChanged(f"job {job.job_id} changed since it was read"
                                 + (f": it is {current.state}" if current is not None else ": it is gone"),
                                 current=current) from None
            job.note(f"its service was still at work on it after it was reported {WORKER_LOST}")
            try:
                version = await self._put(job, current._version)
            except VersionMismatch:
                raise JobChanged(f"job {job.job_id} changed since it was read") from None
        if ends:
            await self.index.mark_ended(job.job_id, job.finished_at or job.updated_at)
        if not live and job._stored_live:
            await self.index.unmark_live(job.job_id)
        return _stored(job, version)

    async def _put(self, job: Job, version: str | None) -> str:
        return await self.store.put_if(_key(job.job_id), job.model_dump_json().encode(), version=version,
                                       content_type="application/json")

    async def _current(self, job_id: str) -> Job | None:
        try:
            return await self._read(job_id)
        except NotFound:
            return None

    async def delete(self, job_id: str) -> None:
        """Delete the job's record and its live marker."""
        await self.store.delete(_key(job_id))
        await self.index.unmark_live(job_id)

    async def exists(self, job_id: str) -> bool:
        try:
            await self.get(job_id)
        except NotFound:
            return False
        return True

    async def unfinished(self) -> list[Job]:
        """Every job not final, oldest first: only the jobs marked live are read, however many
        ended before (a store written before the markers is marked once, reading every record).
        A marker whose job ended, or whose record never came, is dropped."""
        await self._mark_older_records()
        jobs = []
        for job_id in await self.index.live():
            try:
                job = await self._read(job_id)
            except NotFound:
                marked = await self.index.marked_at(job_id)
                if marked is None or (utcnow() - marked).total_seconds() > _ORPHAN_MARKER_S:
                    await self.index.unmark_live(job_id)
                continue
            if not job.final:
                jobs.append(job)
            elif not _live(job):
                await self.index.unmark_live(job_id)  # it ended after a write that stopped half-way
        return sorted(jobs, key=lambda j: j.created_at)

    async def _mark_older_records(self) -> None:
        """Mark the records of a store written before the markers (once per store)."""
        if await self.index.complete():
            return
        for key in await self.store.list("jobs/"):
            job_id = key.removeprefix("jobs/").removesuffix(".json")
            if not (key.endswith(".json") and job_id.isalnum()):
                continue  # a marker or a claim
            try:
                job = await self._read(job_id)
            except NotFound:
                continue
            if _live(job):
                await self.index.mark_live(job_id)
            if job.final:
                await self.index.mark_ended(job_id, job.finished_at or job.updated_at)
        await self.index.mark_complete()

    async def sweep_expired(self, *, now: dt.datetime | None = None, max_days: int = SWEEP_DAYS) -> int:
        """Delete the jobs that ended more than the retention ago, reading only the markers of the
        `max_days` oldest days of endings that are wholly past it; return how many it deleted.
        Without a retention, nothing."""
        if self.retention_s is None:
            return 0
        await self._mark_older_records()
        now = now or utcnow()
        cutoff = now - dt.timedelta(seconds=self.retention_s)
        deleted = 0
        for day in (await self.index.ended_days())[:max_days]:
            if day_end(day) > cutoff:
                break
            for job_id in await self.index.ended_on(day):
                job = await self._current(job_id)
                if job is not None and self._expired(job, now):  # not one resumed and ended later
                    await self.delete(job_id)
                    deleted += 1
                await self.index.unmark_ended(day, job_id)
            await self.index.drop_day(day)
        return deleted


async def recover_unfinished(jobs: JobStore, *, still_queued: set[str]) -> list[Job]:
    """After a process that ran every service died (the embedded mode, `kill -9`): fail each job
    it left unfinished whose work cannot resume, and return those. An ingest job whose message
    is still queued (`still_queued`: job ids) resumes from its saved progress and is left alone;
    a training job is always failed (its claim is then free): a run cut short is started again
    by a person, not silently."""
    failed = []
    for job in await jobs.unfinished():
        if job.kind == "ingest" and job.job_id in still_queued:
            continue
        if job.kind == "train":
            job.fail("interrupted", f"DermaScan stopped while this training job was {job.state}; the current "
                                    "model is unchanged; POST /retrain to start it again")
        else:
            job.fail("interrupted",
                     f"DermaScan stopped while this upload was {job.state} and its queue entry "
                                    "was lost; upload the files again")
        try:
            await jobs.save(job)
        except JobChanged:
            continue  # somebody else decided it meanwhile
        failed.append(job)
    return failed
