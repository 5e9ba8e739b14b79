"""`POST /predict`: one image in, a prediction out, via an inference worker over the broker.

In order, each step cheap before the next: the caller's rate (429), the query (400), the
declared size (413), the body within `DERMASCAN_BODY_TIMEOUT_S` and at the minimum pace (408),
each chunk held against the caller's share and the gateway's upload-bytes budget as it arrives
(429), the format from the magic bytes (400/415), the pixel count from the header (413), and
only then an in-flight slot (429) and the call to a worker.
"""

from __future__ import annotations

import base64
import time

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.image_header import check_pixels
from gateway.keys import BUS, METRICS, SETTINGS
from gateway.limits import UPLOAD_BYTES, paced
from gateway.ratelimit import RATE_LIMITS, caller
from gateway.uploads import FRAMING_BYTES, declared_size, read_single_file
from shared.errors import BadRequest, DermaScanError, Overloaded
from shared.imaging import check_format
from shared.messages import Prediction, PredictReply, PredictRequest, decode
from shared.taxonomy import CLASSES
from shared.wire import refusal, to_wire

#: `?top_k=` when absent.
DEFAULT_TOP_K = 3


class WorkerInfo(BaseModel):
    """Which worker answered, and where the time went."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="The worker's id.")
    batch_size: int = Field(description="Size of the batch the image was part of.")
    queue_ms: float = Field(description="Time the request waited in the broker.")
    compute_ms: float = Field(description="Time of the batched model call.")


class PredictAnswer(Prediction):
    """The body of a successful `POST /predict`: the prediction, the latency the gateway saw,
    and the worker that answered (and, with `?model_input=true`, the image as the model saw it)."""

    latency_ms: float = Field(description="Time from the start of the request to the answer, in ms.")
    worker: WorkerInfo = Field(description="The worker that answered.")
    model_input: str | None = Field(
        None, description="With `?model_input=true` only: the model's input (after crop, resize and colour "
                          "normalisation) as a `data:image/png;base64,...` URL; absent otherwise.")


class InFlight:
    """Counts predictions one gateway is waiting on and refuses more than `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def __enter__(self) -> InFlight:
        if self.count >= self.limit:
            raise Overloaded(f"{self.count} predictions in flight; retry shortly", code="too_many_in_flight")
        self.count += 1
        return self

    def __exit__(self, *_: object) -> None:
        self.count -= 1


IN_FLIGHT = web.AppKey("in_flight", InFlight)


def parse_flag(name: str, raw: str | None) -> bool:
    """A boolean query parameter: absent, `false`/`0` or `true`/`1`; raises BadRequest otherwise."""
    if raw is None or raw in ("false", "0"):
        return False
    if raw in ("true", "1"):
        return True
    raise BadRequest(f"{name} must be true or false (got {raw[:40]!r})", code=f"invalid_{name}")


def parse_top_k(raw: str | None) -> int:
    """`?top_k=`: a whole number from 1 to the number of classes; raises BadRequest otherwise."""
    if raw is None:
        return DEFAULT_TOP_K
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not 1 <= int(raw) <= len(CLASSES):
        raise BadRequest(f"top_k must be a whole number from 1 to {len(CLASSES)} (got {raw[:40]!r})",
                         code="invalid_top_k")
    return int(raw)


async def predict(request: web.Request) -> web.Response:
    """Classify the uploaded image. The gateway reads only the format and the size from the
    bytes: decoding happens in the worker, so that it scales with the workers."""
    started = time.perf_counter()
    app = request.app
    settings = app[SETTINGS]
    app[RATE_LIMITS].predict(request)
    top_k = parse_top_k(request.query.get("top_k"))
    want_input = parse_flag("model_input", request.query.get("model_input"))
    declared_size(request, settings.max_upload_bytes + FRAMING_BYTES, code="file_too_large")
    # bytes are held as they arrive, not as declared: a connection that sends nothing holds nothing
    share = settings.max_upload_bytes_in_flight_per_caller
    with app[UPLOAD_BYTES].hold(caller(request), share) as holding:
        async with paced(settings, request, settings.body_timeout_s, "the image"):
            image = await read_single_file(request, "file", settings.max_upload_bytes, holding.take)
        image_format = check_image(image)
        app[METRICS].upload_bytes.labels("/predict").inc(len(image))
        with app[IN_FLIGHT]:  # taken once the body is in: a slow client holds no slot
            return await _call_worker(request, image, image_format, top_k, started, want_input)


def check_image(image: bytes) -> str:
    """The format (jpeg, png or webp) of an uploaded image, from its magic bytes, checked as far
    as the gateway can without decoding it; raises BadRequest (`empty_file`, `not_an_image`),
    UnsupportedMediaType (another format) or PayloadTooLarge (`too_many_pixels`)."""
    if not image:
        raise BadRequest("the file is empty", code="empty_file")
    image_format = check_format(image[:16])
    check_pixels(image, image_format)
    return image_format


async def ask_worker(app: web.Application, image: bytes, image_format: str, *, top_k: int,
                     want_input: bool = False) -> PredictReply:
    """One prediction from a worker over the broker (counted in the in-flight gauge and the RPC
    latency histogram); the caller holds an IN_FLIGHT slot. Returns the reply, which carries a
    result; raises the worker's error, the bus's (ServiceUnavailable, DeadlineExceeded, ...), or
    for a reply it cannot read NewerSchema (503) or a 500 `bad_message`. Loop-only."""
    settings, metrics = app[SETTINGS], app[METRICS]
    wire = to_wire(PredictRequest(image=image, image_format=image_format,
                                  deadline=time.time() + settings.predict_timeout_s, top_k=top_k,
                                  want_input=want_input))
    with metrics.in_flight.track_inprogress():
        waited = time.perf_counter()
        try:
            body = await app[BUS].call(settings.predict_queue, wire.body, headers=wire.headers,
                                       timeout=settings.predict_timeout_s)
        except DermaScanError as exc:
            metrics.rpc_seconds.labels(exc.code).observe(time.perf_counter() - waited)
            raise
        metrics.rpc_seconds.labels("ok").observe(time.perf_counter() - waited)
    try:
        reply = decode(PredictReply, body)
    except ValidationError as exc:
        raise refusal(exc, "the worker's reply", malformed=DermaScanError) from None
    if reply.error is not None:
        raise reply.error.to_exception()
    assert reply.result is not None
    return reply


async def _call_worker(request: web.Request, image: bytes, image_format: str, top_k: int,
                       started: float, want_input: bool) -> web.Response:
    app = request.app
    reply = await ask_worker(app, image, image_format, top_k=top_k, want_input=want_input)
    assert reply.result is not None
    latency = time.perf_counter() - started
    app[METRICS].predict_seconds.observe(latency)
    answer = PredictAnswer(
        **reply.result.model_dump(), latency_ms=round(latency * 1000, 2),
        worker=WorkerInfo(id=reply.worker_id, batch_size=reply.batch_size,
                          queue_ms=round(reply.queue_ms, 2), compute_ms=round(reply.compute_ms, 2)),
        model_input=("data:image/png;base64," + base64.b64encode(reply.input_png).decode())
        if want_input and reply.input_png else None)
    # serialised by pydantic in one pass (a dict, then json.dumps, took twice as long)
    return web.Response(text=answer.model_dump_json(exclude=None if want_input else {"model_input"}),
                        content_type="application/json")
