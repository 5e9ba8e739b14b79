"""The inference worker service: predict queue in, micro-batched model calls, replies out.

The model served follows the registry's pointer: a promotion broadcast makes the worker look at
the registry at once, and it looks every `model_reconcile_s` anyway, so a broadcast that was
missed (the broker was down) or overtaken (two promotions at once) heals within that.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import os
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import ValidationError

from inference_worker.batching import MicroBatcher
from inference_worker.metrics import WorkerMetrics
from inference_worker.settings import WorkerSettings
from inference_worker.threads import ThreadChooser, ThreadPlan
from shared.bus import Delivery, MessageBus, Subscription
from shared.bus.joining import join
from shared.bus.topology import Topology, declare
from shared.classifier import Classifier, configure_threads
from shared.decode_budget import DecodeBudget
from shared.errors import DermaScanError
from shared.heartbeat import Heartbeat
from shared.imaging import load_for_model
from shared.messages import (
    ClassScore,
    ErrorInfo,
    ModelPromoted,
    Prediction,
    PredictReply,
    PredictRequest,
    Referral,
    WorkerStatus,
    decode,
    encode,
)
from shared.registry import ModelRegistry
from shared.store import ObjectStore
from shared.taxonomy import decide
from shared.wire import from_wire, refusal

log = logging.getLogger(__name__)


def to_prediction(scores_row: np.ndarray, classifier: Classifier, top_k: int) -> Prediction:
    """Turn one row of `Classifier.predict_scores` (class probabilities, then the OOD score) into
    the API's prediction shape.

    The label is the most probable output (the finest class), with its parent; reported
    probabilities roll up (a parent's includes its children's); referral flags compare the
    rolled-up probability of each malignant class with the manifest's threshold; the OOD score
    and the confidence are judged by the manifest's detector and uncertainty threshold.
    """
    manifest = classifier.manifest
    probabilities, ood = scores_row[:-1], float(scores_row[-1])
    detector = manifest.ood if not np.isnan(ood) else None
    parents = manifest.parents
    rolled = classifier.links @ probabilities  # a parent's own probability plus its children's
    scores = {name: float(p) for name, p in zip(classifier.classes, rolled, strict=True)}
    best = classifier.classes[int(decide(probabilities[None, :], classifier.links)[0])]
    ranked = sorted(scores, key=lambda name: -scores[name])[:top_k]
    return Prediction(
        label=best,
        parent=parents.get(best),
        confidence=scores[best],
        probabilities=scores,
        top_k=[ClassScore(label=name, probability=scores[name], parent=parents.get(name)) for name in ranked],
        referral=[Referral(label=name, probability=scores[name], threshold=point.threshold)
                  for name, point in manifest.referral.items()
                  if name in scores and scores[name] >= point.threshold],
        out_of_distribution=detector is not None and ood > detector.threshold,
        ood_score=None if detector is None else round(ood, 4),
        ood_threshold=None if detector is None else detector.threshold,
        uncertain=manifest.uncertainty is not None and scores[best] < manifest.uncertainty.threshold,
        model_version=classifier.version,
    )


def png_of(pixels: np.ndarray) -> bytes:
    """The model's input (uint8, height x width x 3) as PNG bytes: what the model saw."""
    out = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(out, format="PNG", optimize=False)
    return out.getvalue()


def _report_death(task: asyncio.Task[None]) -> None:
    """Done-callback of a loop that should run until cancelled: say why it stopped."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped: %r; the model now follows promotion broadcasts only",
                  task.get_name(), task.exception())


#: The largest JPEG a worker with nothing else to do decodes on its event loop (`_decodes_inline`):
#: ~4 ms of decoding at most (a 217 KiB 2400x1800 JPEG took 4.1 ms, a 25 KiB one 2.3 ms).
INLINE_DECODE_MAX_BYTES = 256 * 1024

#: What stopping waits for once the drain is over (the heartbeat's last broadcast, the batcher).
_RELEASE_STEP_S = 1.0


async def _within(steps: Sequence[asyncio.Future[Any]], timeout: float,
                  keep: set[asyncio.Future[Any]]) -> None:
    """Wait up to `timeout` s for `steps`; cancel those still running and wait no more for them
    (a step that awaits a broker that is gone may not even end when cancelled), holding them in
    `keep` until they do end (a task nothing refers to may be collected mid-way)."""
    if not steps:
        return
    _, late = await asyncio.wait(steps, timeout=max(0.0, timeout))
    for step in late:
        step.cancel()
        keep.add(step)
        step.add_done_callback(keep.discard)
    if late:
        log.warning("%d shutdown steps still waiting after %g s; left behind", len(late), timeout)


class InferenceWorker:
    """One worker process's serving loop. `start()` then `stop()`; loop-only."""

    def __init__(self, settings: WorkerSettings, bus: MessageBus, store: ObjectStore,
                 metrics: WorkerMetrics) -> None:
        self.settings = settings
        self.bus = bus
        self.registry = ModelRegistry(store)
        self.metrics = metrics
        self.worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.classifier: Classifier | None = None
        self._decode_pool = ThreadPoolExecutor(settings.decode_threads, "decode")
        self._decode_budget = DecodeBudget(settings.decode_budget_bytes)
        self._left_behind: set[asyncio.Future[Any]] = set()  # shutdown steps given up on, still ending
        self._model_pool = ThreadPoolExecutor(settings.streams, "model")
        self._threads = ThreadChooser(ThreadPlan.for_host(settings.intra_op_threads))
        self._batcher: MicroBatcher[Classifier, np.ndarray, np.ndarray] | None = None
        self._subscriptions: list[Subscription] = []
        self._in_flight = 0
        self._idle = asyncio.Event()  # set while no request is in flight: what a drain waits for
        self._idle.set()
        self._heartbeat = Heartbeat(bus, settings.status_exchange, self.status, settings.heartbeat_s)
        self._reconciler: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        self._started_at = time.time()

    async def start(self) -> None:
        """Load the model, then consume. Waits for the broker if it is not up yet."""
        configure_threads(self.settings.intra_op_threads,  # lazily: a LiteRT file needs no TensorFlow
                          max(self.settings.inter_op_threads, self.settings.streams), lazily=True)
        await self._load_initial_model()
        self._batcher = MicroBatcher(
            self._threads.run_batch,
            max_batch_size=self.settings.max_batch_size,
            max_wait_ms=self.settings.max_wait_ms,
            executor=self._model_pool,
            concurrency=self.settings.streams,
            on_batch=self.metrics.observe_batch,
        )
        if not self.bus.connected:
            log.info("waiting for the broker")
        self._subscriptions = await join(self.bus, self._join)
        self._heartbeat.start()
        if self.settings.model_path is None:
            self._reconciler = asyncio.create_task(self._reconcile_forever(), name="model-reconcile")
            self._reconciler.add_done_callback(_report_death)
        log.info("worker %s serving %s", self.worker_id, self.classifier and self.classifier.version)

    async def _join(self, made: list[Subscription]) -> None:
        topology = Topology.of(self.settings)
        await declare(self.bus, topology.predict)
        prefetch = 2 * self.settings.max_batch_size * self.settings.streams
        made.append(await self.bus.consume(topology.predict.name, self._on_request, prefetch=prefetch))
        made.append(await self.bus.subscribe(topology.models_exchange, self._on_promotion))

    async def _load_initial_model(self) -> None:
        if self.settings.model_path is not None:
            classifier = await asyncio.to_thread(self._load_warm, self.settings.model_path)
        else:
            version = await self.registry.bootstrap(self.settings.bundled_model_dir)
            classifier = await self._load_version(version)
        self._install(classifier)

    async def _load_version(self, version: str) -> Classifier:
        directory = await self.registry.fetch(version, self.settings.model_cache_dir)
        return await asyncio.to_thread(self._load_warm, directory)

    def _load_warm(self, path: Path) -> Classifier:
        """Load a model and run it once per batch size, before it serves (runs in a thread)."""
        classifier = Classifier.load(path, engine=self.settings.inference_engine,
                                     threads=self.settings.intra_op_threads,
                                     cache_dir=self.settings.litert_cache_dir)
        classifier.warm_up(self.settings.max_batch_size, self.settings.streams)
        if self._threads.plan.adapts and classifier.engine == "litert":  # TensorFlow's are per process
            classifier.warm_up(self.settings.max_batch_size, 1, threads=self._threads.plan.lone)
        log.info("model %s runs on %s", classifier.version, classifier.engine)
        return classifier

    def _install(self, classifier: Classifier) -> None:
        self.classifier = classifier
        self.metrics.model.info({"version": classifier.version, "engine": classifier.engine})
        self.metrics.reloads.labels("loaded").inc()

    async def _on_promotion(self, delivery: Delivery) -> None:
        """A promotion was announced: serve what the registry says is current now (which may be
        a later promotion than the one announced)."""
        decode(ModelPromoted, delivery.body)
        if self.settings.model_path is None:
            await self.reconcile()

    async def reconcile(self) -> str | None:
        """Load the registry's current version unless it is served already; returns the version
        served. A version that fails to load is logged and the old one kept (tried again at the
        next reconcile). Raises what the store raises.

        The pointer is read under the reload lock: read before it, a reconcile that waited behind
        a slow load could install the version it read then, after a later one had been served.
        """
        async with self._reload_lock:
            version = await self.registry.current_version()
            if version is None or (self.classifier is not None and self.classifier.version == version):
                return self.classifier.version if self.classifier else None
            try:
                new = await self._load_version(version)
            except Exception:
                self.metrics.reloads.labels("failed").inc()
                log.exception("could not load promoted model %s; still serving the old one", version)
                return self.classifier.version if self.classifier else None
            self._install(new)  # batches already formed finish on the old model
        log.info("now serving %s", version)
        await self._heartbeat.send()
        return version

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.model_reconcile_s)
            try:
                await self.reconcile()
            except DermaScanError as exc:
                log.warning("could not read the registry's current model (%s); trying again in %g s",
                            exc, self.settings.model_reconcile_s)
            except Exception:
                log.exception("reconciling with the registry failed; trying again in %g s",
                              self.settings.model_reconcile_s)

    async def _on_request(self, delivery: Delivery) -> None:
        self._in_flight += 1
        self._idle.clear()
        try:
            reply = await self._predict(delivery)
            if reply is not None:
                await self.bus.reply(delivery, encode(reply))
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _predict(self, delivery: Delivery) -> PredictReply | None:
        """The reply to one request, or None when nobody waits for it any more. A request this
        worker cannot read is answered with why (`bad_message`, or `unsupported_schema_version`
        from a newer gateway), never raised: one bad message ends nothing but itself."""
        try:
            request = from_wire(PredictRequest, delivery.body, delivery.headers)
        except ValidationError as exc:
            error = refusal(exc, "the predict request")
            self.metrics.requests.labels(error.code).inc()
            return PredictReply(error=ErrorInfo.from_exception(error), worker_id=self.worker_id)
        now = time.time()
        self.metrics.queue_seconds.observe(max(0.0, now - request.sent_at))
        if request.deadline < now:
            self.metrics.requests.labels("expired").inc()
            return None  # nobody waits for it any more
        assert self._batcher is not None and self.classifier is not None
        classifier = self.classifier
        loop = asyncio.get_running_loop()
        try:
            if self._decodes_inline(request):
                image = self._decode(request, classifier)
            else:
                with self._batcher.incoming():
                    image = await loop.run_in_executor(
                        self._decode_pool, functools.partial(self._decode, request, classifier))
            if image is None or request.deadline < time.time():
                self.metrics.requests.labels("expired").inc()
                return None  # expired while it waited for a decode thread: nobody waits for it
            started = time.perf_counter()  # not loop.time(): uvloop's counts whole milliseconds
            probabilities, batch_size = await self._batcher.submit(classifier, image)
            compute_ms = (time.perf_counter() - started) * 1000
            seen = (await loop.run_in_executor(self._decode_pool, png_of, image)
                    if request.want_input else None)
        except DermaScanError as exc:
            self.metrics.requests.labels(exc.code).inc()
            return PredictReply(error=ErrorInfo.from_exception(exc), worker_id=self.worker_id)
        except Exception as exc:
            log.exception("prediction failed")
            self.metrics.requests.labels("internal_error").inc()
            return PredictReply(error=ErrorInfo.from_exception(exc), worker_id=self.worker_id)
        prediction = to_prediction(probabilities, classifier, request.top_k)
        self.metrics.requests.labels("ok").inc()
        self.metrics.predictions.labels(prediction.label, prediction.model_version).inc()
        self.metrics.confidence.observe(prediction.confidence)
        return PredictReply(result=prediction, worker_id=self.worker_id,
                            queue_ms=(now - request.sent_at) * 1000, compute_ms=compute_ms,
                            batch_size=batch_size, input_png=seen)

    def _decodes_inline(self, request: PredictRequest) -> bool:
        """Whether to decode `request` on the event loop rather than in the decode pool: a JPEG of
        at most INLINE_DECODE_MAX_BYTES that finds nothing else in the worker (`MicroBatcher.idle`).

        Then the loop has nothing else to do while it decodes, and the hand-off to a decode thread
        and back cost a lone request more than a millisecond (11.5 against 10.1 ms p50 at one
        client, docs/serving.md). Anything that may take longer (a larger JPEG; a PNG or WebP,
        decoded whole), or that arrives beside other requests, goes to the decode pool, so the
        loop stops for a few milliseconds at most and concurrent images decode in parallel."""
        assert self._batcher is not None
        return (request.image_format == "jpeg" and len(request.image) <= INLINE_DECODE_MAX_BYTES
                and self._batcher.idle)

    def _decode(self, request: PredictRequest, classifier: Classifier) -> np.ndarray | None:
        """The request's image as the model's input, or None when the request expired while it
        waited for a decode thread (then it is not decoded at all). An image that would take
        the decode budget past its bound is refused at once (Overloaded `decoder_busy`); one
        that decodes to more than `max_decoded_pixels` is refused from its header. Runs in the
        decode pool, or on the loop (`_decodes_inline`)."""
        if request.deadline < time.time():
            return None
        return load_for_model(request.image, classifier.input_size, policy=classifier.preprocessing,
                              max_decoded_pixels=self.settings.max_decoded_pixels,
                              budget=self._decode_budget, wait=False)

    def status(self) -> WorkerStatus:
        classifier = self.classifier
        return WorkerStatus(
            worker_id=self.worker_id,
            model_version=classifier.version if classifier else None,
            classes=classifier.classes if classifier else [],
            interval_s=self.settings.heartbeat_s,
            engine=classifier.engine if classifier else None,
            started_at=self._started_at,
        )

    async def stop(self) -> None:
        """Drain: stop consuming, let in-flight requests finish, then release; done within
        `drain_timeout_s` and a second or two more, whatever the broker does. Cancelling the
        consumers (which waits for their handlers and sends their acks) and waiting for the
        requests in flight share the drain timeout: a broker that is gone or silent answers none
        of it, and what it did not get (acks, replies) it redelivers to a peer. Every later step
        is bounded too."""
        drain = [asyncio.ensure_future(subscription.cancel()) for subscription in self._subscriptions]
        await _within([*drain, asyncio.ensure_future(self._idle.wait())], self.settings.drain_timeout_s,
                      self._left_behind)
        if self._reconciler is not None:
            self._reconciler.cancel()
        release = [asyncio.ensure_future(self._heartbeat.stop())]
        if self._batcher is not None:
            release.append(asyncio.ensure_future(self._batcher.close()))
        await _within(release, _RELEASE_STEP_S, self._left_behind)
        self._decode_pool.shutdown(wait=False)
        self._model_pool.shutdown(wait=False)
