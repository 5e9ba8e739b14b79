"""`GET /openapi.json`: the API as OpenAPI 3.1, generated from the pydantic models the handlers
answer with (`model_json_schema`), every route with its body, parameters, answers, the error
shape, the Bearer scheme and the role each route needs (`x-role`).

`ROUTES` is the one table of what each route takes and answers; a test checks it covers every
route of the application, and the schemathesis test sends it generated requests and checks the
answers against it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway import schemas, v2
from gateway.audit import CURSOR_SCHEMA
from gateway.data_views import MAX_PER_CLASS, DataSamples, DataSummary
from gateway.errors import ErrorBody, ProtocolError
from gateway.keys import SETTINGS
from gateway.models import NoBody, PromoteRequest
from gateway.paging import POSITION_SCHEMA, limit_schema
from gateway.predict import DEFAULT_TOP_K, PredictAnswer
from gateway.settings import GatewaySettings
from gateway.status import Status
from gateway.thumbnails import SHA256
from gateway.v2_codec import HEADER_LENGTH, InferRequest, InferResponse
from shared.imaging import MIN_SIDE
from shared.jobs import Job
from shared.messages import TrainOptions
from shared.taxonomy import CLASSES

#: Version names a route accepts (gateway/app.py refuses others with 400).
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
#: Why each error status happens, shared by the routes that can answer it.
ERRORS = {
    400: "Malformed request: not an image, a corrupt or empty one, one under {MIN_SIDE} pixels a side "
         "(`too_small`), a malformed multipart body, a bad query.",
    401: "No token, another scheme, a token that is not printable ASCII or an unknown one (with "
         "`WWW-Authenticate: Bearer`).",
    403: "The token's role is too low, or a foreign `Origin`.",
    404: "No such job or version.",
    408: "The body did not arrive in time (`body_timeout`: `DERMASCAN_BODY_TIMEOUT_S`, "
         "`DERMASCAN_UPLOAD_TIMEOUT_S`) or arrived slower than the minimum rate (`body_too_slow`: "
         "`DERMASCAN_MIN_RECEIVE_RATE_BYTES_PER_S`); the connection is closed.",
    409: "In conflict with the current state (of the job, the version, the training claim).",
    413: "Too large: the file, the request, or the image's pixels from its header (`too_many_pixels`: "
         "more than the workers decode, a PNG or WebP decoding whole).",
    415: "Unsupported image format (JPEG, PNG and WebP are; GIF is not), a body that is not JSON, or a "
         "compressed body (`Content-Encoding`).",
    421: "The `Host` is not one this gateway answers to (`DERMASCAN_ALLOWED_HOSTS`).",
    422: "A field is missing, unknown (`invalid_form` on a bulk upload) or invalid, or a value has another "
         "JSON type than declared (`invalid_options`); the message names the field and why, never the input.",
    429: "Rate limit (per caller, per token, or too many unknown tokens from the address), upload quota, "
         "bytes in flight, or overload (`decoder_busy`: the workers' decode budget is taken by large "
         "images); retry after `Retry-After` seconds.",
    500: "Internal error: the message gives a request id to find in the log.",
    503: "The broker or the store is unavailable; retry after `Retry-After` seconds.",
    504: "No worker answered within `DERMASCAN_PREDICT_TIMEOUT_S`.",
}
_ALWAYS = (421, 429, 500)  # any route may be asked for by a foreign host name, be overloaded or fail
_AUTH = (401, 403)


@dataclass(frozen=True)
class Route:
    """One operation: what it takes and what it answers."""

    method: str
    path: str
    summary: str
    # status -> model, comma-separated media types for others, or the schema of an event stream's events
    ok: dict[int, type[BaseModel] | str | dict[str, Any]]
    role: str | None = None
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | dict[str, Any] | None = None  # a JSON model, or a multipart schema
    # name -> schema, or a function of the settings that gives it (a page's `limit`)
    query: dict[str, dict[str, Any] | Callable[[GatewaySettings], dict[str, Any]]] = field(
        default_factory=dict)
    # The Open Inference Protocol's binary data extension: the body (then required) and the answer
    # may be JSON followed by raw tensors, the JSON's length in `Inference-Header-Content-Length`.
    binary: bool = False

    @property
    def error_body(self) -> type[BaseModel]:
        """The shape of this route's errors: the Open Inference Protocol's on its routes."""
        return ProtocolError if self.path.startswith("/v2") else ErrorBody


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


def v2_routes() -> tuple[Route, ...]:
    """The Open Inference Protocol's routes (gateway/v2.py), each model route with and without a
    version; their errors are `{"error": "..."}`."""
    model, version = "/v2/models/{model_name}", "/v2/models/{model_name}/versions/{version}"
    routes = [Route("get", "/v2", "Open Inference Protocol: the server's metadata.",
                    {200: v2.ServerMetadata}),
              Route("get", "/v2/health/live", "Open Inference Protocol: liveness.", {200: v2.ServerLive}),
              Route("get", "/v2/health/ready", "Open Inference Protocol: readiness as `GET /readyz` (not "
                    "ready: 400 with the problems).", {200: v2.ServerReady}, errors=(400,))]
    for path, named in ((model, ()), (version, (400,))):
        which = "that version" if named else "the model (without a version: what the workers serve)"
        routes += [
            Route("get", path, f"Open Inference Protocol: the inputs, outputs and classes of {which}.",
                  {200: v2.ModelMetadata}, errors=(*named, 404, 503)),
            Route("get", f"{path}/ready", f"Open Inference Protocol: whether a live worker serves {which} "
                  "(not ready: 400).", {200: v2.ModelReady}, errors=(400, 404, 503)),
            Route("post", f"{path}/infer", f"Open Inference Protocol: classify N images (a BYTES tensor "
                  f"`image` of shape [N]), as `POST /predict` does each, with {which}; JSON (each image in "
                  "base64) or the binary data extension.", {200: InferResponse}, role="predict",
                  errors=(400, 404, 408, 409, 413, 415, 422, 503, 504), body=InferRequest, binary=True),
        ]
    return tuple(routes)

ROUTES = (
    Route("get", "/", "The web UI.", {200: "text/html"}),
    Route("get", "/static/{name}", "A file of the web UI (script, style sheet, icon).",
          {200: "text/javascript,text/css,image/svg+xml"}, errors=(404,)),
    Route("get", "/model-card", "MODEL_CARD.md, as plain text.", {200: "text/plain"}, errors=(404,)),
    Route("get", "/status", "What the UI's Status section shows: uptimes, broker, store, workers with their "
          "engines, every queue, the classes the model predicts and those that need data.", {200: Status}),
    Route("get", "/data/summary", "The catalog: images per split and class, image sizes and aspect ratios.",
          {200: DataSummary}),
    Route("get", "/data/samples", "A few images of each class, with their thumbnails' URLs.",
          {200: DataSamples}, role="view", errors=(400,),
          query={"per_class": {"type": "integer", "minimum": 1, "maximum": MAX_PER_CLASS, "default": 4}}),
    Route("get", "/data/thumbnails/{sha256}",
          "A small JPEG of a catalogued image (made once, kept in the store).",
          {200: "image/jpeg"}, role="view", errors=(400, 404, 503)),
    Route("post", "/predict", "Classify one image (JPEG, PNG or WebP).", {200: PredictAnswer}, role="predict",
          errors=(*_UPLOAD_ERRORS, 504), body=PREDICT_FORM,
          query={"top_k": {"type": "integer", "minimum": 1, "maximum": len(CLASSES),
                           "default": DEFAULT_TOP_K},
                 "model_input": {"type": "boolean", "default": False,
                                 "description": "Also answer the image as the model saw it."}}),
    Route("get", "/health", "Uptime, broker, store, workers and their models.", {200: schemas.Health}),
    Route("get", "/livez", "Liveness.", {200: schemas.Liveness}),
    Route("get", "/readyz", "Readiness: broker, store and a serving worker.",
          {200: schemas.Readiness, 503: schemas.Readiness}),
    Route("get", "/classes", "The taxonomy, and what the current model predicts.", {200: schemas.Classes}),
    Route("post", "/upload-bulk", "Store many labelled images as one ingest job.", {202: schemas.JobAccepted},
          role="contribute", errors=_UPLOAD_ERRORS, body=UPLOAD_FORM),
    Route("get", "/jobs/{job_id}", "The state of an ingest or training job.", {200: Job}, errors=(404,)),
    Route("delete", "/jobs/{job_id}", "Cancel a queued or running training job: its record, now `cancelled` "
          "(the training claim is free at once; the record stays readable at `GET /jobs/{job_id}`). 409 when "
          "it is over (`job_over`), storing or promoting its candidate (`too_late`), or an upload "
          "(`not_cancellable`).", {200: Job}, role="operator", errors=(404, 409, 503)),
    Route("get", "/jobs/{job_id}/events", "The job's record as server-sent events while it changes "
          "(`event: job`), the final one as `event: end`; 204 to a client that has the final one.",
          {200: JOB_EVENT, 204: ""}, errors=(404, 429, 503)),
    Route("post", "/retrain", "Train a new model version.",
          {202: schemas.JobAccepted, 409: schemas.TrainingInProgress},
          role="operator", errors=(408, 413, 415, 422, 503), body=TrainOptions),
    Route("get", "/models", "The current version, a page of the versions and one of the promotions, newest "
          "pages first (oldest first within a page); `next` and `history_next` ask for the pages before.",
          {200: schemas.Models}, errors=(400,),
          query={"limit": limit_schema, "after": POSITION_SCHEMA,
                 "history_after": {**POSITION_SCHEMA,
                                   "description": "The `history_next` of the page before."}}),
    Route("post", "/models/rollback", "Serve the version that was current before.", {200: schemas.Current},
          role="operator", errors=(408, 409, 413, 415, 422, 503), body=NoBody),
    Route("post", "/models/{version}/promote", "Serve that version (a gate-rejected one only when forced).",
          {200: schemas.Current}, role="operator", errors=(400, 404, 408, 409, 413, 415, 422, 503),
          body=PromoteRequest),
    Route("get", "/audit", "A page of audited actions, newest first; `next` asks for the page after it.",
          {200: schemas.AuditEvents}, role="operator", errors=(400,),
          query={"limit": limit_schema, "after": CURSOR_SCHEMA}),
    Route("get", "/metrics", "Prometheus metrics.", {200: "text/plain"}),
    Route("get", "/openapi.json", "This document.", {200: "application/json"}),
    *v2_routes(),
)
_PATH_PARAMETERS = {"job_id": {"type": "string", "minLength": 1}, "name": {"type": "string", "minLength": 1},
                    "model_name": {"enum": [v2.MODEL_NAME]},
                    "sha256": {"type": "string", "pattern": f"^{SHA256.pattern}$"},
                    "version": {"type": "string", "pattern": VERSION_PATTERN}}
_MODELS: tuple[type[BaseModel], ...] = (
    ErrorBody, ProtocolError, *{m for r in ROUTES for m in (*r.ok.values(), r.body)
                                if isinstance(m, type) and issubclass(m, BaseModel)})


_BINARY = {"application/octet-stream": {"schema": {
    "type": "string", "format": "binary",
    "description": f"The binary data extension: JSON ({HEADER_LENGTH} bytes), then each binary tensor's "
                   "`binary_data_size` bytes in order (a BYTES element: a 4-byte little-endian length, then "
                   "its bytes)."}}}


def _components() -> tuple[dict[Any, Any], dict[str, Any]]:
    modes: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (m, "validation" if m in (TrainOptions, NoBody, PromoteRequest, InferRequest) else "serialization")
        for m in _MODELS]
    keys, top = models_json_schema(modes, ref_template="#/components/schemas/{model}")
    components = top.get("$defs", {})
    # The model says this in a validator, which pydantic's schema cannot show: with `force`, a reason
    # (whitespace stripped: at least 3 characters) is required.
    components["PromoteRequest"].update({
        "if": {"required": ["force"], "properties": {"force": {"const": True}}},
        "then": {"required": ["reason"],
                 "properties": {"reason": {"type": "string", "pattern": r"^\s*\S.+\S\s*$"}}}})
    return {model: ref for (model, _), ref in keys.items()}, components


def _answer(status: int, what: type[BaseModel] | str | dict[str, Any], refs: dict[Any, Any],
            description: str) -> dict[str, Any]:
    if what == "":
        return {"description": description}  # no body
    if isinstance(what, dict):
        return {"description": description, "content": {"text/event-stream": {"schema": what}}}
    if isinstance(what, str):
        return {"description": description,
                "content": {media: {"schema": {"type": "string"}} for media in what.split(",")}}
    answer: dict[str, Any] = {"description": description,
                              "content": {"application/json": {"schema": refs[what]}}}
    if status in (429, 503) and what in (ErrorBody, ProtocolError):
        answer["headers"] = {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1},
                                             "description": "Seconds to wait before retrying."}}
    if status == 401:
        answer["headers"] = {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}
    return answer


def _operation(route: Route, refs: dict[Any, Any], settings: GatewaySettings) -> dict[str, Any]:
    needs_token = route.role is not None and not (route.role == "predict" and settings.open_predict)
    operation: dict[str, Any] = {"summary": route.summary, "operationId": f"{route.method} {route.path}",
                                 "security": [{"bearer": []}] if needs_token else []}
    if needs_token:
        operation["x-role"] = route.role
    parameters = [{"name": name, "in": "path", "required": True, "schema": schema}
                  for name, schema in _PATH_PARAMETERS.items() if f"{{{name}}}" in route.path]
    parameters += [{"name": name, "in": "query", "required": False,
                    "schema": schema(settings) if callable(schema) else schema}
                   for name, schema in route.query.items()]
    if route.binary:
        parameters.append({"name": HEADER_LENGTH, "in": "header", "required": False,
                           "schema": {"type": "integer", "minimum": 0},
                           "description": "Binary data extension: the length of the JSON at the start of the "
                                          "body; raw tensors follow it."})
    if parameters:
        operation["parameters"] = parameters
    if isinstance(route.body, dict):
        form = {key: value for key, value in route.body.items() if key != "x-encoding"}
        operation["requestBody"] = {"required": True, "content": {"multipart/form-data": {
            "schema": form, "encoding": route.body.get("x-encoding", {})}}}
    elif route.body is not None:
        operation["requestBody"] = {"required": route.binary,
                                    "content": {"application/json": {"schema": refs[route.body]},
                                                **(_BINARY if route.binary else {})}}
    responses = {str(status): _answer(status, what, refs,
                                      "Success." if status < 300 else ERRORS.get(status, ""))
                 for status, what in route.ok.items()}
    if route.binary:
        responses["200"]["content"].update(_BINARY)
    for status in sorted({*route.errors, *(_AUTH if needs_token else ()), *_ALWAYS} - set(route.ok)):
        responses[str(status)] = _answer(status, route.error_body, refs, ERRORS[status])
    operation["responses"] = responses
    return operation


def build(settings: GatewaySettings) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a gateway with `settings` (they say whether /predict is open)."""
    refs, components = _components()
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method] = _operation(route, refs, settings)
    return {
        "openapi": "3.1.0",
        "info": {"title": "DermaScan", "version": "1",
                 "description": "Skin-lesion classification, uploads, retraining and model promotion. Every "
                                "error is `{\"error\": {\"code\", \"message\", \"retryable\"}}`. Roles: "
                                "`predict` < `view` (the catalog's images) < `contribute` < `operator`; "
                                "`x-role` names the one a route needs."},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {
                           "type": "http", "scheme": "bearer",
                           "description": "An API token (`python -m gateway token`)."}}},
    }


async def openapi(request: web.Request) -> web.Response:
    """`GET /openapi.json`."""
    return web.json_response(build(request.app[SETTINGS]))
