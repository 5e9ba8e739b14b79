"""`POST /predict`: one image in, a prediction out, via an inference worker over the broker."""

from __future__ import annotations

import time

from aiohttp import web

from gateway.keys import BUS, METRICS, SETTINGS
from gateway.uploads import read_single_file
from shared.errors import BadRequest, DermaScanError, Overloaded
from shared.imaging import check_format
from shared.messages import PredictReply, PredictRequest, as_jsonable, decode, encode


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


async def predict(request: web.Request) -> web.Response:
    """Classify the uploaded image. The gateway only sniffs the format: decoding happens in
    the worker, so that it scales with the workers."""
    started = time.perf_counter()
    with request.app[IN_FLIGHT]:  # counted from the start: past the bound, the upload is not even read
        return await _predict(request, started)


async def _predict(request: web.Request, started: float) -> web.Response:
    app = request.app
    settings, metrics = app[SETTINGS], app[METRICS]
    image = await read_single_file(request, "file", settings.max_upload_bytes)
    if not image:
        raise BadRequest("the file is empty", code="empty_file")
    image_format = check_format(image[:16])
    metrics.upload_bytes.labels("/predict").inc(len(image))
    top_k = int(request.query.get("top_k", 3))
    message = PredictRequest(
        image=image,
        image_format=image_format,
        deadline=time.time() + settings.predict_timeout_s,
        top_k=max(1, top_k),
    )
    with metrics.in_flight.track_inprogress():
        waited = time.perf_counter()
        try:
            body = await app[BUS].call(
                settings.predict_queue, encode(message), timeout=settings.predict_timeout_s
            )
        except DermaScanError as exc:
            metrics.rpc_seconds.labels(exc.code).observe(time.perf_counter() - waited)
            raise
        metrics.rpc_seconds.labels("ok").observe(time.perf_counter() - waited)
    reply = decode(PredictReply, body)
    if reply.error is not None:
        raise reply.error.to_exception()
    assert reply.result is not None
    latency = time.perf_counter() - started
    metrics.predict_seconds.observe(latency)
    answer = as_jsonable(reply.result)
    answer["latency_ms"] = round(latency * 1000, 2)
    answer["worker"] = {"id": reply.worker_id, "batch_size": reply.batch_size,
                        "queue_ms": round(reply.queue_ms, 2), "compute_ms": round(reply.compute_ms, 2)}
    return web.json_response(answer)
