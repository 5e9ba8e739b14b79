"""The JSON bodies of the gateway's answers that have no model of their own elsewhere, declared
for `GET /openapi.json` (gateway/openapi.py). The schemathesis test
(tests/gateway/test_edge_openapi.py) checks the real answers against them, so a handler that
drifts from its declaration fails it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.audit import AuditEvent
from gateway.errors import ErrorDetail
from shared.jobs import JobKind, JobState


class JobAccepted(BaseModel):
    """`202 Accepted` for a queued job (also its `Location` header: the status URL)."""

    job_id: str = Field(description="The job's id; `GET /jobs/{job_id}` reports on it.")
    kind: JobKind = Field(description="'ingest' or 'train'.")
    state: JobState = Field(description="Usually 'queued'; 'succeeded' when no file needed work.")
    files: int | None = Field(None, description="Files received (bulk uploads only).")
    status_url: str = Field(description="Where to poll the job.")


class TrainingInProgress(BaseModel):
    """`409` of `POST /retrain`: the error, and the job that holds the trainer."""

    error: ErrorDetail
    job_id: str = Field(description="The active training job.")


class QueueDepth(BaseModel):
    messages: int = Field(description="Requests waiting in the predict queue.")
    consumers: int = Field(description="Workers consuming it.")


class BrokerStatus(BaseModel):
    connected: bool = Field(description="Whether the gateway reaches the broker.")
    predict_queue: QueueDepth | None = Field(description="The predict queue, when the broker answered.")


class StoreStatus(BaseModel):
    url: str = Field(description="The object store.")
    reachable: bool = Field(description="Whether it answered a ping within 2 s.")


class WorkerSeen(BaseModel):
    id: str = Field(description="The worker's id.")
    model_version: str | None = Field(description="The version it serves; None while loading.")


class Health(BaseModel):
    """`GET /health`."""

    status: Literal["ok", "degraded"] = Field(
        description="'ok' when broker, store and a serving worker are up.")
    uptime_s: float = Field(description="Seconds since this gateway started.")
    broker: BrokerStatus
    store: StoreStatus
    workers: list[WorkerSeen] = Field(description="Workers heard from recently.")
    model_versions: list[str] = Field(description="Versions being served.")
    classes: list[str] = Field(description="The taxonomy.")


class Liveness(BaseModel):
    """`GET /livez`."""

    status: Literal["alive"]


class Readiness(BaseModel):
    """`GET /readyz`: `ready` (200) or `not_ready` with the problems (503)."""

    status: Literal["ready", "not_ready"]
    problems: list[str] | None = Field(None, description="What is missing (503 only).")


class Classes(BaseModel):
    """`GET /classes`."""

    taxonomy: list[str] = Field(description="Every class the system knows.")
    model_version: str | None = Field(description="The current model, if any.")
    predicted: list[str] = Field(description="Classes the current model predicts.")
    not_yet_predicted: list[str] = Field(description="Classes only uploads and retraining can add.")


class ModelVersion(BaseModel):
    """One version of `GET /models`."""

    model_config = ConfigDict(extra="allow")

    version: str
    created_at: str = Field(description="ISO 8601 time.")
    classes: list[str]
    backbone: str
    parent_version: str | None
    metrics: dict[str, Any] = Field(description="Held-out evaluation figures.")
    gate: dict[str, Any] | None = Field(description="The promotion gate's verdict, when there was one.")
    current: bool


class Promotion(BaseModel):
    version: str
    promoted_at: str = Field(description="ISO 8601 time.")


class Models(BaseModel):
    """`GET /models`."""

    current: str | None = Field(description="The version served.")
    versions: list[ModelVersion] = Field(description="A page of the published versions (the newest without "
                                         "`after`), in the order they were published.")
    next: str | None = Field(description="`after` of the page of versions published before these; "
                             "null: none.")
    history: list[Promotion] = Field(description="A page of the promotions (the newest without "
                                     "`history_after`), oldest first.")
    history_next: str | None = Field(description="`history_after` of the page of promotions before these; "
                                     "null: none.")


class Current(BaseModel):
    """A promotion or rollback done: the version now served."""

    current: str


class AuditEvents(BaseModel):
    """`GET /audit`: a page of events, newest first."""

    events: list[AuditEvent]
    next: str | None = Field(description="`after` of the page of older events; null: the log ends here.")
