"""The Open Inference Protocol (KServe v2 / Triton REST) beside the native API, so that any v2
client (tritonclient, a KServe InferenceGraph, perf_analyzer) calls DermaScan unchanged.

One model, `dermascan`; its versions are the registry's. Without a version a route means what
the workers serve now (normally the registry's current version; during a promotion some workers
may still serve the one before); with one, that version, and `/infer` answers only from it: a
version no live worker serves is a 409 (404 when the registry has no such version), and images
answered by another version while workers change over are a 409 to retry, never a substitute.

`/infer` is `/predict` N times over: the same rate limit (each image is a prediction), the same
checks and limits on each image (gateway/predict.py), the caller's share of the upload budget
for the whole body, an in-flight slot per image, and the N images go to the workers as N
concurrent requests. Errors are the protocol's `{"error": "..."}` (gateway/errors.py) with the
native API's statuses. Health and metadata are open; `/infer` follows `/predict`'s auth rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway import health
from gateway.keys import METRICS, REGISTRY, SETTINGS, WORKERS
from gateway.limits import UPLOAD_BYTES, RateLimited, paced
from gateway.predict import IN_FLIGHT, InFlight, ask_worker, check_image
from gateway.ratelimit import RATE_LIMITS, caller
from gateway.uploads import ClientDisconnected, OnChunk, declared_size
from gateway.v2_codec import HEADER_LENGTH, INPUT, OUTPUTS, encode_response, parse_request
from shared.errors import Conflict, DermaScanError, NotFound, PayloadTooLarge
from shared.manifest import ModelManifest
from shared.messages import PredictReply

MODEL_NAME = "dermascan"
#: The served artifact is a Keras model (run by LiteRT or TensorFlow, each worker's `engine`).
PLATFORM = "keras"
#: The API's version (as /openapi.json's `info.version`).
SERVER_VERSION = "1"
_CHUNK = 64 * 1024


class NotReady(DermaScanError):
    """A readiness route's "false": the protocol answers it with a 4xx."""

    status = 400
    default_code = "not_ready"


class ServerMetadata(BaseModel):
    """`GET /v2`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="`dermascan`.")
    version: str = Field(description="The API's version.")
    extensions: list[str] = Field(description="Protocol extensions: `binary_tensor_data`.")


class ServerLive(BaseModel):
    """`GET /v2/health/live`."""

    model_config = ConfigDict(extra="forbid")

    live: bool = Field(description="Always true: the gateway answers.")


class ServerReady(BaseModel):
    """`GET /v2/health/ready` when ready (not ready: 400 with the problems)."""

    model_config = ConfigDict(extra="forbid")

    ready: bool = Field(description="True: broker, store and a model-serving worker reachable.")


class ModelReady(BaseModel):
    """`GET /v2/models/{name}[/versions/{version}]/ready` when ready (not ready: 400)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="`dermascan`.")
    ready: bool = Field(description="True: a live worker serves the version (any version, without one).")


class TensorMetadata(BaseModel):
    """An input or output of the model."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The tensor's name.")
    datatype: str = Field(description="BYTES, FP32 or BOOL.")
    shape: list[int] = Field(description="-1 for the number of images.")


class ModelMetadata(BaseModel):
    """`GET /v2/models/{name}[/versions/{version}]`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="`dermascan`.")
    versions: list[str] = Field(
        description="The versions live workers serve: those `/infer` can be asked for.")
    platform: str = Field(description=f"`{PLATFORM}`.")
    inputs: list[TensorMetadata] = Field(description="`image`: encoded JPEG, PNG or WebP images.")
    outputs: list[TensorMetadata] = Field(description="What `/infer` answers for each image.")
    parameters: dict[str, str] = Field(
        description="`version`: the version described (without one in the path: the registry's current "
                    "one); `classes`: its classes, comma-separated, in the order of `probabilities`.")


def _served(app: web.Application) -> list[str]:
    return sorted({w.model_version for w in app[WORKERS].serving() if w.model_version})


def _version(request: web.Request) -> str | None:
    """The version the path names (None: none); raises NotFound for a model other than ours."""
    name = request.match_info["model_name"]
    if name != MODEL_NAME:
        raise NotFound(f"no model {name[:80]!r}: this server serves {MODEL_NAME!r}", code="unknown_model")
    return request.match_info.get("version")


async def _manifest(request: web.Request, version: str) -> ModelManifest:
    try:
        return await request.app[REGISTRY].manifest(version)
    except NotFound:
        raise NotFound(f"no version {version!r} in the registry (GET /models lists them)",
                       code="unknown_version") from None


async def _not_served(request: web.Request, version: str) -> str:
    await _manifest(request, version)  # NotFound first
    served = ", ".join(_served(request.app)) or "none"
    return f"version {version!r} is not loaded: no live worker serves it (served: {served})"


async def server_metadata(_: web.Request) -> web.Response:
    return web.json_response(ServerMetadata(name=MODEL_NAME, version=SERVER_VERSION,
                                            extensions=["binary_tensor_data"]).model_dump())


async def server_live(_: web.Request) -> web.Response:
    return web.json_response(ServerLive(live=True).model_dump())


async def server_ready(request: web.Request) -> web.Response:
    """Ready as `GET /readyz` says; raises NotReady with its problems."""
    answer = await health.readyz(request)
    if answer.status != 200:
        raise NotReady("not ready: " + "; ".join(json.loads(answer.text or "{}").get("problems", [])))
    return web.json_response(ServerReady(ready=True).model_dump())


async def model_ready(request: web.Request) -> web.Response:
    """Raises NotFound for an unknown model or version, NotReady when nobody serves it."""
    version = _version(request)
    if version is None and not _served(request.app):
        raise NotReady("no inference worker is serving a model")
    if version is not None and version not in _served(request.app):
        raise NotReady(await _not_served(request, version))
    return web.json_response(ModelReady(name=MODEL_NAME, ready=True).model_dump())


async def model_metadata(request: web.Request) -> web.Response:
    """The version's inputs and outputs and its classes; raises NotFound for an unknown model or
    version (or an empty registry)."""
    version = _version(request) or await request.app[REGISTRY].current_version()
    if version is None:
        raise NotFound("the registry has no model yet", code="no_model")
    manifest = await _manifest(request, version)
    outputs = [TensorMetadata(name=name, datatype=o.datatype, shape=[-1, len(manifest.classes)] if o.per_class
                              else [-1]) for name, o in OUTPUTS.items()]
    body = ModelMetadata(name=MODEL_NAME, versions=_served(request.app), platform=PLATFORM,
                         inputs=[TensorMetadata(name=INPUT, datatype="BYTES", shape=[-1])], outputs=outputs,
                         parameters={"version": version, "classes": ",".join(manifest.classes)})
    return web.json_response(body.model_dump())


async def _read(request: web.Request, limit: int, take: OnChunk) -> bytes:
    chunks, size = [], 0
    try:
        async for chunk in request.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the request is larger than {limit:,} bytes, what one caller may send "
                                      "at once (DERMASCAN_MAX_UPLOAD_BYTES_IN_FLIGHT_PER_CALLER)",
                                      code="request_too_large")
            take(len(chunk))
            chunks.append(chunk)
    except ConnectionResetError:
        raise ClientDisconnected("the client closed the connection before the body arrived",
                                 code="client_disconnected") from None
    return b"".join(chunks)


def _charge(request: web.Request, count: int) -> None:
    """Count the images after the first (counted before the body was read) as predictions;
    raises PayloadTooLarge when there are more than a caller's burst or the gateway's in-flight
    limit could ever take, RateLimited past the caller's rate."""
    settings, buckets = request.app[SETTINGS], request.app[RATE_LIMITS].predictions
    most = min(settings.max_in_flight, settings.predict_burst if buckets.rate > 0 else settings.max_in_flight)
    if count > most:
        raise PayloadTooLarge(f"{count} images in one request; the limit is {most} (DERMASCAN_PREDICT_BURST, "
                              "DERMASCAN_MAX_IN_FLIGHT)", code="too_many_images")
    wait = buckets.take(caller(request), count - 1) if count > 1 else 0.0
    if wait:
        raise RateLimited(f"{count} images are more predictions than this caller may send now; the limit is "
                          f"{buckets.rate:g} a second (bursts of {buckets.capacity:g})",
                          retry_after_s=wait)


def _about(index: int, count: int, exc: DermaScanError) -> DermaScanError:
    """`exc` naming the image it is about, when it is one of several and a client's error."""
    if count == 1 or exc.status >= 500 or type(exc).__init__ is not DermaScanError.__init__:
        return exc
    return type(exc)(f"image {index}: {exc.message}", code=exc.code)


async def _ask_all(app: web.Application, images: list[bytes], formats: list[str],
                   top_k: int) -> list[PredictReply]:
    """Every image's reply, asked concurrently; the first failure cancels the rest and is raised."""

    async def one(index: int) -> PredictReply:
        try:
            return await ask_worker(app, images[index], formats[index], top_k=top_k)
        except DermaScanError as exc:
            raise _about(index, len(images), exc) from None

    tasks = [asyncio.ensure_future(one(index)) for index in range(len(images))]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()


async def infer(request: web.Request) -> web.Response:
    """Classify the request's images (see the module's docstring for the order of the checks)."""
    app = request.app
    settings = app[SETTINGS]
    version = _version(request)
    if version is not None and version not in _served(app):
        raise Conflict(await _not_served(request, version) + "; promote it to serve it, or ask without a "
                       "version", code="version_not_loaded")
    app[RATE_LIMITS].predict(request)
    limit = settings.max_upload_bytes_in_flight_per_caller
    declared_size(request, limit, code="request_too_large")
    with app[UPLOAD_BYTES].hold(caller(request), limit) as holding:
        async with paced(settings, request, settings.body_timeout_s, "the inference request"):
            body = await _read(request, limit, holding.take)
        inference = parse_request(body, request.headers.get(HEADER_LENGTH),
                                  max_image_bytes=settings.max_upload_bytes)
        del body
        images = inference.images
        _charge(request, len(images))
        formats = []
        for index, image in enumerate(images):
            try:
                formats.append(check_image(image))
            except DermaScanError as exc:
                raise _about(index, len(images), exc) from None
        route = request.match_info.route.resource
        app[METRICS].upload_bytes.labels(route.canonical if route else "/v2").inc(sum(map(len, images)))
        with contextlib.ExitStack() as slots:  # one slot per image, taken once the body is in
            in_flight: InFlight = app[IN_FLIGHT]
            for _ in images:
                slots.enter_context(in_flight)
            replies = await _ask_all(app, images, formats, inference.top_k)
    predictions = [reply.result for reply in replies if reply.result is not None]
    answered = sorted({p.model_version for p in predictions})
    if version is not None and answered != [version]:
        raise Conflict(f"some images were answered by {', '.join(v for v in answered if v != version)}, not "
                       f"{version}: the workers are changing versions; retry", code="version_changed")
    if len(answered) > 1:
        raise Conflict(f"the images were answered by {' and '.join(answered)}: the workers are changing "
                       "versions; retry", code="version_changed")
    content, header_length = encode_response(inference, predictions, answered[0], MODEL_NAME)
    if header_length is None:
        return web.Response(body=content, content_type="application/json")
    return web.Response(body=content, content_type="application/octet-stream",
                        headers={HEADER_LENGTH: str(header_length)})
