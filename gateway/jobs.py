"""`GET /jobs/{id}` (open: a job id is an unguessable capability) and `POST /retrain`
(operators; 202 + job id, 409 while one is active)."""

from __future__ import annotations

import datetime as dt
import json

from aiohttp import web

from gateway.audit import AUDIT_DRAFT
from gateway.json_body import read_json
from gateway.keys import BUS, JOBS, SETTINGS, STORE
from shared.errors import DermaScanError, NotFound
from shared.jobs import ACTIVE_TRAINING_KEY, Job, JobStore
from shared.manifest import utcnow
from shared.messages import ErrorInfo, TrainOptions, TrainRequest, encode


async def load_job(jobs: JobStore, job_id: str, stale_after_s: float) -> Job:
    """The job, with a running job that stopped reporting turned into a failed one."""
    job = await jobs.get(job_id)
    silent = utcnow() - job.updated_at
    if job.state == "running" and silent > dt.timedelta(seconds=stale_after_s):
        job.state = "failed"
        job.error = ErrorInfo(code="worker_lost", status=500,
                              message=f"no progress for {silent.total_seconds():.0f} s: the "
                                      f"{job.kind} service stopped while running it")
        job.note(job.error.message)
        await jobs.save(job)
    return job


async def get_job(request: web.Request) -> web.Response:
    job = await load_job(request.app[JOBS], request.match_info["job_id"], request.app[SETTINGS].job_stale_s)
    return web.json_response(job.model_dump(mode="json"))


async def _active_training(request: web.Request) -> Job | None:
    app = request.app
    try:
        job_id = json.loads(await app[STORE].get(ACTIVE_TRAINING_KEY))["job_id"]
        job = await load_job(app[JOBS], job_id, app[SETTINGS].job_stale_s)
    except NotFound:
        return None
    return None if job.final else job


async def retrain(request: web.Request) -> web.Response:
    """Queue a training job with the body's `TrainOptions` (JSON or no body; gate margins are
    the trainer's settings, never the caller's: a body naming them is 422)."""
    app = request.app
    options = await read_json(request, TrainOptions, what="the training options")
    draft = request[AUDIT_DRAFT]
    draft.detail = {"options": options.model_dump()}
    active = await _active_training(request)
    if active is not None:
        draft.target, draft.outcome = active.job_id, "training_in_progress"
        return web.json_response(
            {"error": {"code": "training_in_progress",
                       "message": f"training job {active.job_id} is {active.state}; wait for it"},
             "job_id": active.job_id},
            status=409)
    job = Job(kind="train")
    draft.target = job.job_id
    job.progress = {"phase": "queued"}
    job.note(f"queued with options {options.model_dump_json()}")
    await app[JOBS].save(job)
    await app[STORE].put(ACTIVE_TRAINING_KEY, json.dumps({"job_id": job.job_id}).encode())
    try:
        await app[BUS].publish(app[SETTINGS].train_queue, encode(TrainRequest(job_id=job.job_id, options=options)))
    except DermaScanError as exc:
        job.state, job.error = "failed", ErrorInfo.from_exception(exc)
        await app[JOBS].save(job)
        raise
    return web.json_response({"job_id": job.job_id, "kind": "train", "state": job.state,
                              "status_url": f"/jobs/{job.job_id}"},
                             status=202, headers={"Location": f"/jobs/{job.job_id}"})

