"""Long-running jobs (ingest and training): one JSON shape, stored durably in the object store.

A job lives at `jobs/<job_id>.json`. Every service that works on a job updates that record, so
any gateway (also after a restart) answers `GET /jobs/{id}` from the store.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import NotFound
from shared.manifest import utcnow
from shared.messages import ErrorInfo, new_id
from shared.store import ObjectStore

JobKind = Literal["ingest", "train"]
JobState = Literal["queued", "running", "succeeded", "failed", "rejected"]
#: Pointer to the training job that is queued or running (at most one at a time).
ACTIVE_TRAINING_KEY = "jobs/active-train.json"
FINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "rejected"})


class Job(BaseModel):
    """The status of one job as `GET /jobs/{id}` returns it."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(default_factory=new_id, description="Unique id.")
    kind: JobKind = Field(description="'ingest' or 'train'.")
    state: JobState = Field("queued", description="queued, running, succeeded, failed or rejected.")
    progress: dict[str, Any] = Field(default_factory=dict, description="Kind-specific progress.")
    result: dict[str, Any] | None = Field(None, description="Outcome once final.")
    error: ErrorInfo | None = Field(None, description="Why it failed or was rejected.")
    log: list[str] = Field(default_factory=list, description="Human-readable log lines.")
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def note(self, line: str) -> None:
        """Append a timestamped log line."""
        self.log.append(f"{time.strftime('%H:%M:%S')} {line}")


def _key(job_id: str) -> str:
    return f"jobs/{job_id}.json"


class JobStore:
    """Reads and writes job records. Loop-only."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    async def get(self, job_id: str) -> Job:
        """The job; raises NotFound (also for ids that could not be keys)."""
        if not job_id.isalnum():
            raise NotFound(f"no job {job_id!r}")
        return Job.model_validate_json(await self.store.get(_key(job_id)))

    async def save(self, job: Job) -> Job:
        job.updated_at = utcnow()
        if job.state == "running" and job.started_at is None:
            job.started_at = job.updated_at
        if job.final and job.finished_at is None:
            job.finished_at = job.updated_at
        await self.store.put(_key(job.job_id), job.model_dump_json().encode(), content_type="application/json")
        return job

    async def exists(self, job_id: str) -> bool:
        try:
            await self.get(job_id)
        except NotFound:
            return False
        return True
