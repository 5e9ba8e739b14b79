"""`GET /openapi.json`: the API as OpenAPI 3.1, every route of the route table
(gateway/routes.py) with its body, parameters, answers, the error shape, the Bearer scheme and
the role it needs (`x-role`); the schemas are the pydantic models the handlers take and answer
with (`model_json_schema`).

The handler describes the routes the application registered (`ROUTE_TABLE`, set by
`create_app`); `build` describes any table. tests/gateway/test_edge_openapi.py checks that the
document lists exactly the application's routes, and sends it schemathesis-generated requests
to check the answers against it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway import v2
from gateway.errors import ErrorBody, ProtocolError
from gateway.keys import SETTINGS
from gateway.settings import GatewaySettings
from gateway.thumbnails import SHA256
from gateway.v2_codec import HEADER_LENGTH
from shared.imaging import MIN_SIDE

if TYPE_CHECKING:  # gateway/routes.py names this module's handler
    from gateway.routes import Route

#: A query parameter's schema, or a function of the settings that gives it (a page's `limit`).
QuerySchema = dict[str, Any] | Callable[[GatewaySettings], dict[str, Any]]
#: The routes the application serves, which its document describes.
ROUTE_TABLE: web.AppKey[tuple[Route, ...]] = web.AppKey("route_table")
#: Version names a route accepts (gateway/app.py refuses others with 400).
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
#: Why each error status happens, shared by the routes that can answer it.
ERRORS = {
    400: f"Malformed request: not an image, a corrupt or empty one, one under {MIN_SIDE} pixels a side "
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
         "JSON type than declared (`invalid_options`); the message names the field and why, never the input. "
         "`POST /retrain`: also a fine-tune the catalog holds too few images for "
         "(`not_enough_images_to_fine_tune`, naming each class too thin).",
    429: "Rate limit (per caller, per token, or too many unknown tokens from the address), upload quota, "
         "bytes in flight, or overload (`decoder_busy`: the workers' decode budget is taken by large "
         "images); retry after `Retry-After` seconds.",
    500: "Internal error: the message gives a request id to find in the log.",
    503: "The broker or the store is unavailable; retry after `Retry-After` seconds.",
    504: "No worker answered within `DERMASCAN_PREDICT_TIMEOUT_S`.",
}
_ALWAYS = (421, 429, 500)  # any route may be asked for by a foreign host name, be overloaded or fail
_AUTH = (401, 403)


_PATH_PARAMETERS = {"job_id": {"type": "string", "minLength": 1}, "name": {"type": "string", "minLength": 1},
                    "model_name": {"enum": [v2.MODEL_NAME]},
                    "sha256": {"type": "string", "pattern": f"^{SHA256.pattern}$"},
                    "version": {"type": "string", "pattern": VERSION_PATTERN}}


_BINARY = {"application/octet-stream": {"schema": {
    "type": "string", "format": "binary",
    "description": f"The binary data extension: JSON ({HEADER_LENGTH} bytes), then each binary tensor's "
                   "`binary_data_size` bytes in order (a BYTES element: a 4-byte little-endian length, then "
                   "its bytes)."}}}


def _components(routes: Sequence[Route]) -> tuple[dict[Any, Any], dict[str, Any]]:
    answered = dict.fromkeys(m for r in routes for m in r.ok.values() if isinstance(m, type))
    taken = dict.fromkeys(r.body for r in routes if isinstance(r.body, type))
    modes: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (ErrorBody, "serialization"), (ProtocolError, "serialization"),
        *((m, "serialization") for m in answered if issubclass(m, BaseModel)),
        *((m, "validation") for m in taken)]
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
    role = route.token_role(open_predict=settings.open_predict)
    needs_token = role is not None
    operation: dict[str, Any] = {"summary": route.summary, "operationId": f"{route.method} {route.path}",
                                 "security": [{"bearer": []}] if needs_token else []}
    if role is not None:
        operation["x-role"] = role.label
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
        error_body = ProtocolError if route.path.startswith("/v2") else ErrorBody
        responses[str(status)] = _answer(status, error_body, refs, ERRORS[status])
    operation["responses"] = responses
    return operation


def build(settings: GatewaySettings, routes: Sequence[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes` served by a gateway with `settings` (they say whether
    /predict is open)."""
    refs, components = _components(routes)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
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
    """`GET /openapi.json`: the document of the application's `ROUTE_TABLE`."""
    routes = request.app[ROUTE_TABLE]
    return web.json_response(build(request.app[SETTINGS], routes))
