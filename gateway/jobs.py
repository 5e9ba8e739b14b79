"""`GET /jobs/{id}` (open: a job id is an unguessable capability), `POST /retrain` (operators;
202 + job id, 409 while one is active, 422 a fine-tune the catalog is too small for) and
`DELETE /jobs/{id}` (operators: cancel a training job)."""

from __future__ import annotations

import contextlib
from typing import Any

from aiohttp import web

from gateway.audit import AUDIT_DRAFT
from gateway.fine_tune_check import refuse_thin_fine_tune
from gateway.json_body import read_json
from gateway.keys import BUS, JOBS, SETTINGS
from shared.errors import DermaScanError
from shared.jobs import IngestResult, Job, JobChanged
from shared.messages import ErrorInfo, TrainOptions, TrainRequest, encode
from shared.training_claim import cancel_training, claim_training


def public(job: Job) -> dict[str, Any]:
    """A job's record as clients get it (`GET /jobs/{id}` and its event stream), in JSON: an
    upload's file outcomes never say which split an image was drawn into (records saved before
    outcomes stopped carrying it still do), so a contributor cannot learn which of their images
    are held out."""
    data = job.model_dump(mode="json")
    if isinstance(job.result, IngestResult):
        for outcome in data["result"]["files"]:
            outcome.pop("split", None)
    return data


async def get_job(request: web.Request) -> web.Response:
    """The job; a running job that stopped reporting is answered (and saved) as failed
    `worker_lost` (`JobStore.load`). An ingest job may go on from there: its service resumes it
    when the job's message comes again, so a poller can see `failed` then `running` again."""
    job = await request.app[JOBS].load(request.match_info["job_id"],
                                       stale_after_s=request.app[SETTINGS].job_stale_s)
    return web.json_response(public(job))


async def retrain(request: web.Request) -> web.Response:
    """Queue a training job with the body's `TrainOptions` (JSON or no body; gate margins are
    the trainer's settings, never the caller's: a body naming them is 422). A fine-tune the
    catalog is too small for is 422 `not_enough_images_to_fine_tune` before anything is claimed
    or queued, when the live trainers' policy is known (`gateway.fine_tune_check`; when it is not,
    the job is queued and the trainer refuses it). Of concurrent requests exactly one is accepted
    (`shared.training_claim.claim_training`); the others are 409."""
    app = request.app
    options = await read_json(request, TrainOptions, what="the training options")
    draft = request[AUDIT_DRAFT]
    draft.detail = {"options": options.model_dump()}
    if options.fine_tune:
        await refuse_thin_fine_tune(app)
    job = Job(kind="train")
    job.progress = {"phase": "queued"}
    job.note(f"queued with options {options.model_dump_json()}")
    active = await claim_training(app[JOBS], job, stale_after_s=app[SETTINGS].job_stale_s,
                                  queued_stale_after_s=app[SETTINGS].training_queued_stale_s)
    if active is not None:
        draft.target, draft.outcome = active.job_id, "training_in_progress"
        return web.json_response(
            {"error": {"code": "training_in_progress",
                       "message": f"training job {active.job_id} is {active.state}; wait for it"},
             "job_id": active.job_id},
            status=409)
    draft.target = job.job_id
    try:
        await app[BUS].publish(app[SETTINGS].train_queue,
                               encode(TrainRequest(job_id=job.job_id, options=options)))
    except DermaScanError as exc:
        job.state, job.error = "failed", ErrorInfo.from_exception(exc)  # final: the claim is free again
        job.note(f"could not queue the job: {exc.message}")
        with contextlib.suppress(JobChanged):  # its message arrived after all: the trainer's record stands
            await app[JOBS].save(job)
        raise
    return web.json_response({"job_id": job.job_id, "kind": "train", "state": job.state,
                              "status_url": f"/jobs/{job.job_id}"},
                             status=202, headers={"Location": f"/jobs/{job.job_id}"})


async def cancel_job(request: web.Request) -> web.Response:
    """`DELETE /jobs/{id}`: cancel a queued or running training job (`shared.training_claim.cancel_training`)
    and answer its record, now `cancelled`; the training claim is free at once, and the trainer
    running it stops at its next progress write. Audited. Raises NotFound, and Conflict
    (`job_over`: already final; `too_late`: storing or promoting its candidate; `not_cancellable`:
    an upload, whose id the path cannot tell from a training job's).

    It cancels, it does not delete: the record stays readable (`GET /jobs/{id}` answers it,
    `cancelled`), which is what a poller of the job needs."""
    app = request.app
    job_id = request.match_info["job_id"]
    draft = request[AUDIT_DRAFT]
    draft.target = job_id
    job = await cancel_training(app[JOBS], job_id, why=f"cancelled by {draft.principal.name}",
                                stale_after_s=app[SETTINGS].job_stale_s)
    return web.json_response(public(job))
