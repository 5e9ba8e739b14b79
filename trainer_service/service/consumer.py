"""The trainer service: one training job at a time from the train queue.

The message is acknowledged only when the job is final. A job found `running` on redelivery
belonged to a trainer that died: it is marked failed, and the current model was never touched
(the registry pointer moves only after a candidate passed the gate). Finishing a job, however it
ends, releases the training claim the gateway took for it (`shared.training_claim`).
While it runs the job is held through a `JobLease`: every write is conditional, so a job that was
cancelled (`DELETE /jobs/{id}`) or reported `worker_lost` is found out at the next write and the
trainer stops, publishing and promoting nothing; a job past `DERMASCAN_TRAINING_TIME_LIMIT_S` is
stopped and failed (`time_limit_exceeded`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

from shared.bus import Delivery, MessageBus, Subscription
from shared.bus.joining import join
from shared.bus.topology import Topology, declare
from shared.classifier import configure_threads
from shared.errors import DermaScanError, NotFound
from shared.heartbeat import Heartbeat
from shared.jobs import Job, JobChanged, JobState, JobStore, TrainResult
from shared.manifest import ModelManifest
from shared.messages import ErrorInfo, ModelPromoted, TrainOptions, TrainRequest, decode, encode
from shared.registry import ModelRegistry
from shared.store import ObjectStore
from trainer_service.ml.retrain import Outcome, Progress, retrain_head
from trainer_service.service.apart import retrain_apart
from trainer_service.service.lease import TIME_LIMIT, JobLease, JobTaken, TimeLimitExceeded
from trainer_service.service.metrics import TrainerMetrics
from trainer_service.settings import TrainerSettings
from trainer_service.tracking import Run, log_manifest, tracker_for

log = logging.getLogger(__name__)


def new_version() -> str:
    """A fresh version id, `vYYYYMMDD-HHMMSS-xxxxxx`: sorts by time and stays unique when
    trainers publish within the same second (24 random bits)."""
    return dt.datetime.now(dt.UTC).strftime("v%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class TrainerService:
    """Consumes training jobs. `start()` then `stop()`; loop-only."""

    def __init__(self, settings: TrainerSettings, bus: MessageBus, store: ObjectStore,
                 metrics: TrainerMetrics) -> None:
        self.settings, self.bus, self.store, self.metrics = settings, bus, store, metrics
        self.jobs = JobStore(store)
        self.registry = ModelRegistry(store)
        self.tracking = tracker_for(settings.mlflow_tracking_uri, ui_url=settings.mlflow_ui_url,
                                    on_failure=metrics.tracking_failures.inc)
        self.topology = Topology.of(settings)
        self._subscriptions: list[Subscription] = []
        self.status_beat = Heartbeat.of_service(bus, settings.status_exchange, "trainer_service",
                                                settings.heartbeat_s, fine_tune=settings.fine_tune_policy())

    async def start(self) -> None:
        configure_threads(self.settings.intra_op_threads, 1)
        current = await self.registry.bootstrap(self.settings.bundled_model_dir)
        self.metrics.current_model.info({"version": current})
        self._subscriptions = await join(self.bus, self._join)
        self.status_beat.start()

    async def _join(self, made: list[Subscription]) -> None:
        await declare(self.bus, self.topology.train)
        made.append(await self.bus.subscribe(self.topology.models_exchange, self._on_promotion))
        made.append(await self.bus.consume(self.topology.train.name, self._on_job, prefetch=1))

    async def _on_promotion(self, delivery: Delivery) -> None:
        """A promotion was announced: report the registry's current version (broadcasts may
        arrive out of order; the registry's pointer is the truth)."""
        decode(ModelPromoted, delivery.body)
        with contextlib.suppress(DermaScanError):
            current = await self.registry.current_version()
            if current is not None:
                self.metrics.current_model.info({"version": current})
                await asyncio.to_thread(self.tracking.tag_version, current,
                                        {"dermascan.promoted_at": dt.datetime.now(dt.UTC).isoformat()})

    async def stop(self) -> None:
        for subscription in self._subscriptions:
            await subscription.cancel()
        await self.status_beat.stop()  # last: listed as up while a training still finishes

    async def _on_job(self, delivery: Delivery) -> None:
        request = decode(TrainRequest, delivery.body)
        try:
            job = await self.jobs.get(request.job_id)
        except NotFound:
            log.error("training job %s has no record; dead-lettering", request.job_id)
            raise
        if job.final:
            return
        if job.state == "running":
            await self._finish(job, "failed", ErrorInfo(
                code="trainer_crashed", status=500,
                message="the trainer stopped while running this job; the current model is unchanged"))
            return
        await self._run(job, request)

    async def _run(self, job: Job, request: TrainRequest) -> None:
        started = time.monotonic()
        progress = Progress({"phase": "starting"})
        self.metrics.running.inc()
        try:
            async with JobLease(self.jobs, job, progress, every_s=self.settings.progress_interval_s,
                                limit_s=self.settings.training_time_limit_s) as lease:
                await self._train(lease, request, progress, started)
        except JobTaken as taken:  # cancelled or reported lost: its record says so, and stands
            log.warning("%s: stopped, nothing more published or promoted", taken)
            current = taken.current
            self.metrics.jobs.labels("cancelled" if current is not None and current.state == "cancelled"
                                     else "failed").inc()
        finally:
            self.metrics.running.dec()

    async def _train(self, lease: JobLease, request: TrainRequest, progress: Progress,
                     started: float) -> None:
        """Train, publish and (when asked and the gate passed) promote the job's candidate.
        Raises JobTaken as soon as the job is no longer this trainer's."""
        job, options = lease.job, request.options
        progress.should_stop = lease.should_stop  # a stopped job's training thread ends at its next report
        version = new_version()
        run = await asyncio.to_thread(self.tracking.start, version, {"dermascan.job_id": job.job_id,
                                                                     "dermascan.command": "retrain"})
        try:
            outcome = await self._tracked(run, lease.limited(self._retrain(options, version, progress,
                                                                           job.note)))
        except TimeLimitExceeded as exc:
            log.warning("training job %s: %s", job.job_id, exc)
            await self._end(lease, "failed", ErrorInfo(code=TIME_LIMIT, status=504, message=str(exc)))
            return
        except JobTaken:
            raise
        except Exception as exc:
            log.exception("training job %s failed", job.job_id)
            await self._end(lease, "failed", ErrorInfo.from_exception(exc))
            return
        manifest = outcome.manifest
        if run is not None:
            await asyncio.to_thread(self._log_run, run, manifest, progress, options.model_dump())
            manifest = manifest.model_copy(update={"tracking_url": self.tracking.link(run)})
        try:
            await self._deliver(lease, outcome, manifest, options, started)
        except JobTaken:
            raise
        except Exception as exc:  # a store or registry that failed: the job ends failed, saying why
            log.exception("training job %s: its candidate could not be published or promoted", job.job_id)
            await self._end(lease, "failed", ErrorInfo.from_exception(exc))

    def _retrain(self, options: TrainOptions, version: str, progress: Progress,
                 log: Callable[[str], None]) -> Coroutine[Any, Any, Outcome]:
        """The job's computation: in a child process (`apart.retrain_apart`, on this service's
        store) unless `train_in_subprocess` is off."""
        if self.settings.train_in_subprocess:
            settings = self.settings.model_copy(update={"store_url": self.store.url})
            return retrain_apart(options, version=version, settings=settings, progress=progress, log=log)
        return retrain_head(self.store, self.registry, options, version=version, settings=self.settings,
                            progress=progress, log=log)

    async def _deliver(self, lease: JobLease, outcome: Outcome, manifest: ModelManifest,
                       options: TrainOptions, started: float) -> None:
        """Publish the candidate, then (when asked and the gate passed) promote it, and end the job.
        Raises JobTaken as soon as the job is no longer this trainer's."""
        job = lease.job
        await lease.phase("publishing")  # still ours? (raises JobTaken); too late to cancel from here
        await self.registry.publish(outcome.directory / "model.keras", manifest, evidence=outcome.evidence)
        await self.store.put(f"models/{manifest.version}/snapshot.json",
                             json.dumps(outcome.snapshot).encode())
        evaluation = manifest.metrics["eval"]
        self.metrics.balanced_accuracy.set(evaluation["balanced_accuracy"])
        for name, row in evaluation["per_class"].items():
            if row["recall"] is not None:
                self.metrics.class_recall.labels(name).set(row["recall"])
        self.metrics.training_seconds.observe(time.monotonic() - started)
        job.result = result = TrainResult(
            version=manifest.version, gate=outcome.gate, classes=manifest.classes,
            balanced_accuracy=evaluation["balanced_accuracy"],
            per_class_recall={k: v["recall"] for k, v in evaluation["per_class"].items()},
            training_seconds=manifest.training_seconds)
        if not outcome.gate.passed:
            await self._end(lease, "rejected", ErrorInfo(
                code="gate_rejected", status=422, message="; ".join(outcome.gate.reasons)))
            return
        if options.promote:
            await lease.phase("promoting")  # still ours? (raises JobTaken): a lost job never promotes
            await self.registry.promote(manifest.version)
            result.promoted = True
            self.metrics.current_model.info({"version": manifest.version})
            with contextlib.suppress(DermaScanError):
                await self.bus.broadcast(self.topology.models_exchange,
                                         encode(ModelPromoted(version=manifest.version)))
            job.note(f"promoted {manifest.version}")
        await self._end(lease, "succeeded", None)

    @staticmethod
    async def _tracked(run: Run | None, work: Any) -> Any:
        """Await `work`; a run it fails or stops ends FAILED (and the error goes on)."""
        try:
            return await work
        except BaseException:
            if run is not None:
                await asyncio.to_thread(run.end, "FAILED")
            raise

    @staticmethod
    def _log_run(run: Run, manifest: ModelManifest, progress: Progress, options: dict[str, Any]) -> None:
        """The finished training in its MLflow run: epochs as they came, then the manifest's story."""
        for row in progress.values.get("history") or []:
            run.metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row.get("epoch", 0)))
        log_manifest(run, manifest, params={"options": options})
        run.end("FINISHED")

    async def _end(self, lease: JobLease, state: JobState, error: ErrorInfo | None) -> None:
        if await lease.finish(state, error, phase=None if state == "failed" else "done"):  # claim freed
            self.metrics.jobs.labels(state).inc()

    async def _finish(self, job: Job, state: JobState, error: ErrorInfo | None) -> None:
        job.state, job.error = state, error
        if error is not None:
            job.note(f"{state}: {error.message}")
        try:
            await self.jobs.save(job)  # final: the training claim is free
        except JobChanged as changed:
            log.warning("training job %s not ended %s: %s", job.job_id, state, changed)
            return
        self.metrics.jobs.labels(state).inc()
