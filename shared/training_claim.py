"""One training at a time: this module's rule, and only its.

`claim_training` takes the claim with one conditional create (`ObjectStore.create`) of the next
record in `jobs/training-claims/`, so of many concurrent claims exactly one wins. The newest claim
record names the job holding it; the claim is free again once that job is final (the trainer
releases it by finishing the job, an operator by cancelling it: `cancel_training`), its record
is missing, or it stopped reporting progress.

The claims are a `shared.sequence` log with its head at `jobs/training-claims/head.json`: the
newest claim is two reads (the head, and the number after it), never a listing of every claim.
"""

from __future__ import annotations

from shared.errors import Conflict, NotFound, ServiceUnavailable
from shared.jobs import Job, JobChanged, JobStore
from shared.manifest import utcnow
from shared.sequence import Sequence
from shared.store import AlreadyExists, ObjectStore

#: One record per claim of "the training job", numbered; the newest is the claim in force.
TRAINING_CLAIMS = "jobs/training-claims/"
#: The head of the claims: the newest number, with a copy of its record.
CLAIMS_HEAD = f"{TRAINING_CLAIMS}head.json"
#: Progress phases of a training job past which a cancel is too late: its candidate is being
#: stored in the registry or made the current model (seconds; roll back afterwards instead).
TOO_LATE_TO_CANCEL = frozenset({"publishing", "promoting"})
_CLAIM_TRIES = 50
_SAVE_TRIES = 20


def _claims(store: ObjectStore) -> Sequence:
    return Sequence(store, TRAINING_CLAIMS, CLAIMS_HEAD)


async def _newest_claim(store: ObjectStore) -> tuple[int, str | None]:
    """The number of the newest claim record and the job it names (0, None: none yet)."""
    number, record = await _claims(store).newest()
    job_id = record.get("job_id") if number and record is not None else None
    return number, job_id if isinstance(job_id, str) else None  # unreadable: nobody holds it


async def training_holder(jobs: JobStore, *, stale_after_s: float,
                          queued_stale_after_s: float | None = None) -> Job | None:
    """The training job holding the claim, or None when the claim is free.

    A holder still `queued` after `queued_stale_after_s` is failed (`not_started`) and frees the
    claim: its gateway may have stopped between claiming and publishing, so no message will ever
    start it, or no trainer took it for that long. A trainer that later gets its message finds it
    final and leaves it (the model is unchanged either way).
    """
    _, job_id = await _newest_claim(jobs.store)
    if job_id is None:
        return None
    try:
        holder = await jobs.load(job_id, stale_after_s=stale_after_s)
    except NotFound:
        return None
    waited = (utcnow() - holder.created_at).total_seconds()
    if holder.state == "queued" and queued_stale_after_s is not None and waited > queued_stale_after_s:
        holder.fail("not_started", f"no trainer started this job in {waited:.0f} s (its gateway may have "
                                   "stopped before queueing it, or no trainer is running); the model is "
                                   "unchanged; POST /retrain to start another", status=503)
        try:
            await jobs.save(holder)
        except JobChanged as changed:  # a trainer started it (or somebody ended it) meanwhile
            return None if changed.current is None or changed.current.final else changed.current
        return None
    return None if holder.final else holder


async def claim_training(jobs: JobStore, job: Job, *, stale_after_s: float,
                         queued_stale_after_s: float | None = None) -> Job | None:
    """Make `job` (a new training job) the one training job: save it, then claim. Returns None
    when it holds the claim, else the job that does (and `job` is deleted again). Exactly one of
    many concurrent claims wins; a holder that went silent or never started is failed first
    (`training_holder`). Raises what the store raises (StoreUnavailable)."""
    await jobs.save(job)  # first: a claim never names a job that is not there
    claims = _claims(jobs.store)
    record = {"job_id": job.job_id, "claimed_at": utcnow().isoformat()}
    for _ in range(_CLAIM_TRIES):
        number, holder_id = await _newest_claim(jobs.store)
        if holder_id == job.job_id:
            return None
        holder = (await training_holder(jobs, stale_after_s=stale_after_s,
                                        queued_stale_after_s=queued_stale_after_s)
                  if holder_id else None)
        if holder is not None:
            await jobs.delete(job.job_id)
            return holder
        try:
            await claims.create(number + 1, record)
        except AlreadyExists:
            continue  # another claim came first: look at it
        await claims.advance(number + 1, record)
        return None
    await jobs.delete(job.job_id)
    raise ServiceUnavailable(f"could not claim training in {_CLAIM_TRIES} tries", code="claim_contended")


async def cancel_training(jobs: JobStore, job_id: str, *, why: str, stale_after_s: float) -> Job:
    """Cancel a queued or running training job and return it: its record is `cancelled` at once,
    which frees the training claim. A trainer running it finds that at its next write (its
    progress heartbeat) and stops without publishing or promoting; a queued job's message is
    acknowledged unrun. Raises NotFound; Conflict `not_cancellable` for an upload, `job_over` for a
    final job and `too_late` for one storing or promoting its candidate (`TOO_LATE_TO_CANCEL`)."""
    for _ in range(_SAVE_TRIES):
        job = await jobs.load(job_id, stale_after_s=stale_after_s)
        if job.kind != "train":
            raise Conflict("only a training job can be cancelled; an upload runs to its end",
                           code="not_cancellable")
        if job.final:
            raise Conflict(f"job {job_id} is already {job.state}", code="job_over")
        phase = job.progress.get("phase")
        if phase in TOO_LATE_TO_CANCEL:
            raise Conflict(f"job {job_id} is {phase} its candidate: too late to cancel; it ends in seconds "
                           "(POST /models/rollback undoes a promotion)", code="too_late")
        job.cancel(why)
        try:
            return await jobs.save(job)
        except JobChanged:
            continue  # its trainer wrote progress meanwhile: look again
    raise ServiceUnavailable(f"job {job_id} changed {_SAVE_TRIES} times while being cancelled",
                             code="job_contended")
