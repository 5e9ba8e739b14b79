"""The gateway's routes, each declared once in `ROUTES`: its method and path, its handler, the role
it needs and the action it audits, what it takes and answers, and its row of docs/api.md.

Three things are made from this table, so none can drift from another:
- `create_app` (gateway/app.py) registers every route, behind `guard` when it has a role and
  behind the version check when its path has `{version}`;
- `GET /openapi.json` (gateway/openapi.py) describes every route from it;
- `scripts/route_table.py --write` writes the routes table of docs/api.md from it, and
  tests/docs checks the page holds what it prints.

To add a route: write its handler in the module of its concern, add a `Route` here (in the order
the docs table shows it), run `.venv/bin/python scripts/route_table.py --write`.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal

from aiohttp.typedefs import Handler
from pydantic import BaseModel

from gateway import audit, data_views, events, health, jobs, models, schemas, status, thumbnails, ui, v2
from gateway.audit import CURSOR_SCHEMA, Action
from gateway.bulk import upload_bulk
from gateway.data_views import DEFAULT_PER_CLASS, MAX_PER_CLASS, DataSamples, DataSummary
from gateway.exposition import metrics
from gateway.models import NoBody, PromoteRequest
from gateway.openapi import QuerySchema, openapi
from gateway.paging import POSITION_SCHEMA, limit_schema
from gateway.predict import DEFAULT_TOP_K, PredictAnswer, predict
from gateway.status import Status
from gateway.thumbnails import SIDE
from gateway.tokens import Role
from gateway.v2_codec import InferRequest, InferResponse
from shared.imaging import MIN_SIDE
from shared.jobs import Job
from shared.messages import TrainOptions
from shared.taxonomy import CLASSES


@dataclass(frozen=True)
class Row:
    """A route's row of the docs/api.md table, in markdown (links relative to docs/). Routes that
    share an equal `Row` and role share one row, where the first of them stands."""

    what: str
    #: Empty: the route's 2xx statuses.
    success: str = ""
    errors: str = ""
    #: Why a route without a role needs no token, when that is worth saying.
    open_because: str = ""


@dataclass(frozen=True)
class Route:
    """One operation: where it is, who may call it, what it takes and answers."""

    method: Literal["get", "post", "delete"]
    path: str
    handler: Handler
    summary: str  # OpenAPI's summary: plain text
    # status -> model, comma-separated media types for others, "" for no body, or the schema of an
    # event stream's events
    ok: dict[int, type[BaseModel] | str | dict[str, Any]]
    _: KW_ONLY
    doc: Row
    role: Role | None = None
    action: Action | None = None  # audited (gateway/audit.py); needs a role
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | dict[str, Any] | None = None  # a JSON model, or a multipart schema
    query: dict[str, QuerySchema] = field(default_factory=dict)
    # The Open Inference Protocol's binary data extension: the body (then required) and the answer
    # may be JSON followed by raw tensors, the JSON's length in `Inference-Header-Content-Length`.
    binary: bool = False

    def token_role(self, *, open_predict: bool) -> Role | None:
        """The role a caller's token needs; None when the route reads no token: it has no role, or
        it is a `predict` one while `DERMASCAN_OPEN_PREDICT` is true (as `guard` decides)."""
        return None if self.role is Role.PREDICT and open_predict else self.role

    def __post_init__(self) -> None:
        if self.action is not None and self.role is None:
            raise ValueError(f"{self.method} {self.path}: an audited action needs a role")


_IMAGE = {"type": "string", "format": "binary",
          "description": f"A JPEG, PNG or WebP image at least {MIN_SIDE} pixels a side; any other is refused "
                         "(400 `not_an_image`, `too_small`; 415 for another format such as GIF)."}
_IMAGE_TYPES = "image/jpeg, image/png, image/webp"
# Other fields are ignored, not refused (the UI's form is one file); declaring none keeps generated
# forms to the real ones.
PREDICT_FORM = {"type": "object", "required": ["file"], "additionalProperties": False,
                "properties": {"file": _IMAGE}, "x-encoding": {"file": {"contentType": _IMAGE_TYPES}}}
# Any other field, or a second label, is refused (422 `invalid_form`, gateway/bulk.py).
UPLOAD_FORM = {"type": "object", "required": ["files"], "additionalProperties": False, "properties": {
    # One or more parts, each a file whatever its bytes: each one's outcome (stored, duplicate,
    # rejected and why) is in the job, so no content is refused here, and one part is as good as
    # an array of them (on the wire they are the same): all this declares is "not none".
    "files": {"not": {"type": "array", "maxItems": 0},
              "description": "Images or zip archives of class folders, one part each; each file's outcome "
                             "is in the job."},
    "label": {"enum": ["", *CLASSES], "description": "The class of every file, one field at most (empty: "
                                                     "each file's class from its name)."}}}
#: One server-sent event of `GET /jobs/{id}/events`, as Open API 3.1 describes an event stream's
#: events: `job` and `end` carry the job's record, the others `{job_id, message}`.
JOB_EVENT = {"type": "object", "required": ["event", "data"], "properties": {
    "event": {"enum": ["job", "end", "closing", "gone", "waiting"]},
    "data": {"type": "string", "contentMediaType": "application/json",
             "description": "JSON: the job's record (`job`, `end`), or `{job_id, message}`."},
    "id": {"type": "string", "description": "The record's `updated_at`."},
    "retry": {"type": "integer", "minimum": 0}}}
_UPLOAD_ERRORS = (400, 408, 413, 415, 422, 503)
_PREDICT_ERRORS = ("400 not an image / corrupt / empty / too small / malformed multipart / bad `top_k` or "
                   "`model_input`, 413 too large / too many pixels, 415 unsupported format, 422 missing "
                   "field, 429 rate limited / overloaded / `decoder_busy`, 503 broker down, 504 no worker "
                   "answered in time")


def _v2_routes() -> list[Route]:
    """The Open Inference Protocol's routes (gateway/v2.py), each model route with and without a
    version; their errors are `{"error": "..."}`."""
    protocol = "[Open Inference Protocol](#open-inference-protocol-kserve-v2--triton)"
    server = Row(f"{protocol}: server metadata, liveness, readiness as `/readyz`",
                 errors="ready: 400 (the protocol's \"a 4xx is false\")")
    routes = [
        Route("get", "/v2", v2.server_metadata, "Open Inference Protocol: the server's metadata.",
              {200: v2.ServerMetadata}, doc=server),
        Route("get", "/v2/health/live", v2.server_live, "Open Inference Protocol: liveness.",
              {200: v2.ServerLive}, doc=server),
        Route("get", "/v2/health/ready", v2.server_ready,
              "Open Inference Protocol: readiness as `GET /readyz` (not ready: 400 with the problems).",
              {200: v2.ServerReady}, errors=(400,), doc=server)]
    metadata = Row(f"the model's metadata: name `{v2.MODEL_NAME}`, the versions live workers serve, "
                   "inputs, outputs, `parameters.classes`",
                   errors="400 not a version name, 404 unknown model or version")
    ready = Row("whether a live worker serves that version (without one: any version)",
                errors="400 not ready, 404")
    infer = Row("classify N images sent as one BYTES tensor",
                errors="`/predict`'s, plus 400 malformed tensor, 409 the version is not loaded or changed "
                       "during the request (retry), 413 more images than `DERMASCAN_PREDICT_BURST` or "
                       "`DERMASCAN_MAX_IN_FLIGHT`")
    model, version = "/v2/models/{model_name}", "/v2/models/{model_name}/versions/{version}"
    for path, named in ((model, ()), (version, (400,))):
        which = "that version" if named else "the model (without a version: what the workers serve)"
        routes += [
            Route("get", path, v2.model_metadata,
                  f"Open Inference Protocol: the inputs, outputs and classes of {which}.",
                  {200: v2.ModelMetadata}, errors=(*named, 404, 503), doc=metadata),
            Route("get", f"{path}/ready", v2.model_ready,
                  f"Open Inference Protocol: whether a live worker serves {which} (not ready: 400).",
                  {200: v2.ModelReady}, errors=(400, 404, 503), doc=ready),
            Route("post", f"{path}/infer", v2.infer,
                  "Open Inference Protocol: classify N images (a BYTES tensor `image` of shape [N]), as "
                  f"`POST /predict` does each, with {which}; JSON (each image in base64) or the binary "
                  "data extension.",
                  {200: InferResponse}, role=Role.PREDICT,
                  errors=(400, 404, 408, 409, 413, 415, 422, 503, 504), body=InferRequest, binary=True,
                  doc=infer),
        ]
    return routes


_PROBES = Row("liveness; readiness = broker, store and a model-serving worker reachable",
              errors="503 with the problems")

ROUTES: tuple[Route, ...] = (
    Route("post", "/predict", predict, "Classify one image (JPEG, PNG or WebP).",
          {200: PredictAnswer}, role=Role.PREDICT, errors=(*_UPLOAD_ERRORS, 504), body=PREDICT_FORM,
          query={"top_k": {"type": "integer", "minimum": 1, "maximum": len(CLASSES),
                           "default": DEFAULT_TOP_K},
                 "model_input": {"type": "boolean", "default": False,
                                 "description": "Also answer the image as the model saw it."}},
          doc=Row("classify one image (multipart field `file`: JPEG, PNG or WebP; "
                  f"`?top_k={DEFAULT_TOP_K}`, 1-{len(CLASSES)}; `?model_input=true` adds `model_input`, the "
                  "image as the model saw it after crop, resize and colour normalisation, as a PNG `data:` "
                  "URL)", errors=_PREDICT_ERRORS)),
    Route("post", "/upload-bulk", upload_bulk, "Store many labelled images as one ingest job.",
          {202: schemas.JobAccepted}, role=Role.CONTRIBUTE, action="upload", errors=_UPLOAD_ERRORS,
          body=UPLOAD_FORM,
          doc=Row("store many labelled images (multipart `files`, optional `label`; zip archives of class "
                  "folders): an ingest job", success="202 + job",
                  errors="400 malformed multipart, 413, 422 unknown label / no files / `invalid_form` (a "
                         "field other than `files` and one `label`), 429 upload quota, 503")),
    Route("get", "/jobs/{job_id}", jobs.get_job, "The state of an ingest or training job.",
          {200: Job}, errors=(404,),
          doc=Row("state of an ingest or training job ([jobs](architecture.md#jobs)); a job that ended "
                  "more than `DERMASCAN_JOB_RETENTION_S` ago is gone", errors="404",
                  open_because="the random job id is the capability")),
    Route("get", "/jobs/{job_id}/events", events.job_events,
          "The job's record as server-sent events while it changes (`event: job`), the final one as "
          "`event: end`; 204 to a client that has the final one.",
          {200: JOB_EVENT, 204: ""}, errors=(404, 429, 503),
          doc=Row("the same record as server-sent events while it changes (`event: job`: phase, epoch, "
                  "loss and validation metrics, or the files done so far), the final one as `event: end`, "
                  "then the stream ends; `event: closing` when the gateway shuts down (the browser "
                  "reconnects)",
                  success="200 `text/event-stream`; 204 to a reconnection whose `Last-Event-ID` is the "
                          "final record",
                  errors="404, 429 `too_many_streams` past `DERMASCAN_EVENTS_MAX_STREAMS` (poll "
                         "`GET /jobs/{job_id}` instead)")),
    Route("delete", "/jobs/{job_id}", jobs.cancel_job,
          "Cancel a queued or running training job: its record, now `cancelled` (the training claim is "
          "free at once; the record stays readable at `GET /jobs/{job_id}`). 409 when it is over "
          "(`job_over`), storing or promoting its candidate (`too_late`), or an upload (`not_cancellable`).",
          {200: Job}, role=Role.OPERATOR, action="cancel", errors=(404, 409, 503),
          doc=Row("cancel a queued or running training job: it ends `cancelled` and the training claim "
                  "is free at once", success="200 with the record",
                  errors="404, 409 `job_over` / `too_late` / `not_cancellable` (an upload)")),
    Route("post", "/retrain", jobs.retrain, "Train a new model version.",
          {202: schemas.JobAccepted, 409: schemas.TrainingInProgress}, role=Role.OPERATOR,
          action="retrain", errors=(408, 413, 415, 422, 503), body=TrainOptions,
          doc=Row("train a new model version ([options](#training-options))", success="202 + job",
                  errors="409 a training job is active (its `job_id` included), 422 bad options, or "
                         "`not_enough_images_to_fine_tune`: a fine-tune the catalog is too small for")),
    Route("get", "/models", models.list_models,
          "The current version, a page of the versions and one of the promotions, newest pages first "
          "(oldest first within a page); `next` and `history_next` ask for the pages before.",
          {200: schemas.Models}, errors=(400,),
          query={"limit": limit_schema, "after": POSITION_SCHEMA,
                 "history_after": {**POSITION_SCHEMA,
                                   "description": "The `history_next` of the page before."}},
          doc=Row("the current version, a page of versions with their metrics, gate verdicts and MLflow "
                  "run (`tracking_url`), and a page of promotions ([paging](#paging))",
                  errors="400 bad limit or cursor")),
    Route("post", "/models/{version}/promote", models.promote,
          "Serve that version (a gate-rejected one only when forced).",
          {200: schemas.Current}, role=Role.OPERATOR, action="promote",
          errors=(400, 404, 408, 409, 413, 415, 422, 503), body=PromoteRequest,
          doc=Row("serve that version; one the gate rejected only with "
                  "`{\"force\": true, \"reason\": \"...\"}` ([gate overrides](security.md#gate-overrides))",
                  errors="400 not a version name (letters, digits, `_ . -`, at most 128, not `*.json`), "
                         "404, 409 `gate_rejected`, 422 force without a reason")),
    Route("post", "/models/rollback", models.rollback, "Serve the version that was current before.",
          {200: schemas.Current}, role=Role.OPERATOR, action="rollback",
          errors=(408, 409, 413, 415, 422, 503), body=NoBody,
          doc=Row("serve the version that was current before", errors="409 `nothing_to_roll_back`")),
    Route("get", "/audit", audit.list_events,
          "A page of audited actions, newest first; `next` asks for the page after it.",
          {200: schemas.AuditEvents}, role=Role.OPERATOR, errors=(400,),
          query={"limit": limit_schema, "after": CURSOR_SCHEMA},
          doc=Row("the audit log, newest first, a page at a time "
                  "([the audit log](security.md#the-audit-log))", errors="400 bad limit or cursor")),
    Route("get", "/classes", health.classes, "The taxonomy, and what the current model predicts.",
          {200: schemas.Classes}, doc=Row("the taxonomy, and which classes the current model predicts")),
    Route("get", "/health", health.health, "Uptime, broker, store, workers and their models.",
          {200: schemas.Health},
          doc=Row("uptime, broker and store status, live workers and their model versions, classes")),
    Route("get", "/livez", health.livez, "Liveness.", {200: schemas.Liveness}, doc=_PROBES),
    Route("get", "/readyz", health.readyz, "Readiness: broker, store and a serving worker.",
          {200: schemas.Readiness, 503: schemas.Readiness}, doc=_PROBES),
    Route("get", "/metrics", metrics, "Prometheus metrics.", {200: "text/plain"},
          doc=Row("Prometheus metrics ([operations.md](operations.md#observability))")),
    Route("get", "/status", status.status,
          "What the UI's Status section shows: uptimes, broker, store, workers with their engines, every "
          "queue, the classes the model predicts and those that need data.",
          {200: Status},
          doc=Row("what the UI's Status section shows: uptime of every service instance (from their "
                  "heartbeats), broker and store, queue depths and consumers, each worker's model version "
                  "and engine, the classes that need data, the Grafana link")),
    Route("get", "/data/summary", data_views.data_summary,
          "The catalog: images per split and class, image sizes and aspect ratios.", {200: DataSummary},
          doc=Row("the stored catalog: images per split and class, histograms of the longest side and of "
                  "the aspect ratio, the commonest sizes")),
    Route("get", "/data/samples", data_views.data_samples,
          "A few images of each class, with their thumbnails' URLs.",
          {200: DataSamples}, role=Role.VIEW, errors=(400,),
          query={"per_class": {"type": "integer", "minimum": 1, "maximum": MAX_PER_CLASS,
                               "default": DEFAULT_PER_CLASS}},
          doc=Row(f"a few images of each class (`?per_class={DEFAULT_PER_CLASS}`, 1-{MAX_PER_CLASS}), each "
                  "with its thumbnail's URL", errors="400 bad `per_class`")),
    Route("get", "/data/thumbnails/{sha256}", thumbnails.thumbnail,
          "A small JPEG of a catalogued image (made once, kept in the store).",
          {200: "image/jpeg"}, role=Role.VIEW, errors=(400, 404, 503),
          doc=Row(f"a JPEG of a catalogued image, at most {SIDE} px a side, made once and kept in the "
                  "store, `Cache-Control: private`",
                  errors="400 not a lowercase SHA-256, 404 not catalogued")),
    *_v2_routes(),
    Route("get", "/openapi.json", openapi, "This document.", {200: "application/json"},
          doc=Row("the API as OpenAPI 3.1")),
    Route("get", "/", ui.index, "The web UI.", {200: "text/html"}, doc=Row("the web UI ([ui.md](ui.md))")),
    Route("get", "/static/{name}", ui.asset, "A file of the web UI (script, style sheet, icon).",
          {200: "text/javascript,text/css,image/svg+xml"}, errors=(404,),
          doc=Row("the UI's scripts, style sheet and icon (only those files, by name)", errors="404")),
    Route("get", "/model-card", ui.model_card, "MODEL_CARD.md, as plain text.",
          {200: "text/plain"}, errors=(404,),
          doc=Row("[MODEL_CARD.md](../MODEL_CARD.md) as plain text (the UI links it)",
                  errors="404 where it is not installed")),
)
