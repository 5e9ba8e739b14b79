"""The ingest service: one upload job at a time from the ingest queue, every file accounted for.

- Every file ends in an outcome (stored, duplicate, rejected with a reason); a file that cannot
  be decoded, or an archive member past a limit, is rejected on its own, never the whole job.
- Each image is catalogued the moment it is stored (`shared.catalog`), so a job that fails
  part-way loses nothing it stored; its result lists those files as stored.
- Store calls retry transient failures with backoff (`ingest_service.retrying`). When the store
  stays down past that budget the job is requeued (republished with its attempt number in the
  `x-dermascan-attempt` header), up to `max_attempts`; the attempt is also counted in the job
  record before the work starts, which counts the deliveries of a process that died mid-job.
- Outcomes are saved in the job record as files are handled, and a staged upload is deleted
  only after its outcome is saved; a later attempt resumes after the files already handled. A
  finished or failed job deletes all its staged uploads.
- A job the gateway reported failed as `worker_lost` (silent past `DERMASCAN_JOB_STALE_S`, e.g.
  while this service was cut from the broker) is not over: its staged uploads are kept (only this
  service deletes them, at its own end of the job), and when its message comes again the job goes
  back to running and resumes after the files already handled.
- Each stored image's split is drawn for its lesion group (an upload: the image alone) with the
  server's split secret (`shared.split_secret`, read once, when the first image needs it), and is
  kept in its record only: an outcome says the class an image is stored under, never its split,
  so a contributor cannot learn which of their images are held out.
The message is acknowledged once the job is final or requeued, so a crash mid-job means the job
is redone (idempotently: images are content-addressed) rather than lost.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ingest_service import archives
from ingest_service.metrics import IngestMetrics
from ingest_service.progress import Progress, slot_of
from ingest_service.retrying import RetryingStore, RetryPolicy, is_transient
from ingest_service.settings import IngestSettings
from shared.bus import Delivery, MessageBus, Subscription
from shared.bus.joining import join
from shared.bus.topology import Topology, declare
from shared.catalog import Catalog, ImageRecord, image_key, lesion_group, split_for
from shared.decode_budget import DecodeBudget
from shared.errors import BadRequest, DermaScanError, NotFound, ServiceUnavailable
from shared.heartbeat import Heartbeat
from shared.jobs import WORKER_LOST, FileOutcome, Job, JobStore
from shared.messages import ErrorInfo, IngestRequest, StagedFile, decode, encode
from shared.sanitize import clean_image
from shared.split_secret import load_split_secret
from shared.store import ObjectStore
from shared.taxonomy import class_from_filename

log = logging.getLogger(__name__)
ATTEMPT_HEADER = "x-dermascan-attempt"


def attempt_of(delivery: Delivery) -> int:
    """The attempt number a delivery carries (1 when it has none, or a bad one)."""
    try:
        return max(1, int(str(delivery.headers.get(ATTEMPT_HEADER, 1))))
    except ValueError:
        return 1


class IngestService:
    """Consumes ingest jobs. `start()` then `stop()`; loop-only."""

    def __init__(self, settings: IngestSettings, bus: MessageBus, store: ObjectStore,
                 metrics: IngestMetrics) -> None:
        self.settings, self.bus, self.metrics = settings, bus, metrics
        policy = RetryPolicy(settings.store_retry_s, settings.store_retry_first_s,
                             settings.store_retry_max_wait_s)
        self.raw_store = store
        self.store = RetryingStore(store, policy, on_retry=lambda op: metrics.store_retries.labels(op).inc())
        self.catalog = Catalog(self.store)
        self.jobs = JobStore(self.store)
        self.limits = archives.ArchiveLimits(settings.max_zip_members, settings.max_member_bytes,
                                             settings.max_zip_bytes)
        self.topology = Topology.of(settings)
        #: Bounds the memory image cleaning decodes to, and hands it back after each large image.
        self.decode_budget = DecodeBudget(settings.clean_budget_bytes)
        self._split_secret: bytes | None = None
        self._subscriptions: list[Subscription] = []
        self.status_beat = Heartbeat.of_service(bus, settings.status_exchange, "ingest_service",
                                              settings.heartbeat_s)

    async def start(self) -> None:
        self._subscriptions = await join(self.bus, self._join)
        self.status_beat.start()

    async def _join(self, made: list[Subscription]) -> None:
        await declare(self.bus, self.topology.ingest)
        made.append(await self.bus.consume(self.topology.ingest.name, self._on_job, prefetch=1))

    async def stop(self) -> None:
        for subscription in self._subscriptions:
            await subscription.cancel()
        await self.status_beat.stop()  # last: listed as up while a job still finishes

    async def _on_job(self, delivery: Delivery) -> None:
        request = decode(IngestRequest, delivery.body)  # a malformed message is dead-lettered
        attempt = attempt_of(delivery)
        try:
            job = await self.jobs.get(request.job_id)
        except NotFound:
            log.error("ingest job %s has no record; dead-lettering", request.job_id)
            raise
        except ServiceUnavailable as exc:
            await self._requeue_or_raise(request, attempt, exc)
            return
        progress = Progress.resume(job, len(request.files))
        if job.final:
            try:
                if not await self._resumable(request, job, progress):
                    return  # redelivered after it was finished
            except ServiceUnavailable as exc:
                await self._requeue_or_raise(request, attempt, exc)
                return
            job.resume(f"the ingest service got the job again after it was reported {WORKER_LOST}; "
                       f"continuing after the {len(progress.handled)} of {len(request.files)} files "
                       "already handled")
            self.metrics.resumes.inc()
            log.info("ingest job %s was reported %s; resuming it", job.job_id, WORKER_LOST)
        attempt = max(attempt, int(job.progress.get("attempts", 0)) + 1)
        if attempt > self.settings.max_attempts:
            error = ServiceUnavailable(f"gave up after {attempt - 1} attempts", code="too_many_attempts")
            await self._fail(request, job, progress, error)
            return
        job.state, job.progress["attempts"] = "running", attempt
        started = time.perf_counter()
        try:
            await self.jobs.save(job)  # the attempt is counted before the work starts
            await self._ingest(request, job, progress)
        except Exception as exc:
            if is_transient(exc) and attempt < self.settings.max_attempts:
                log.warning("ingest job %s: attempt %d failed (%s); requeued", job.job_id, attempt, exc)
                await self._requeue_or_raise(request, attempt, exc)
                return
            log.exception("ingest job %s failed", job.job_id)
            await self._fail(request, job, progress, exc)
            return
        job.state = "succeeded"
        job.progress.pop("handled", None)
        job.progress["done"] = job.progress.get("files", len(progress.outcomes))
        job.result = result = progress.result()
        job.note(f"stored {result.stored}, duplicates {result.duplicate}, rejected {result.rejected}")
        await self.jobs.save(job)
        self.metrics.jobs.labels("succeeded").inc()
        self.metrics.job_seconds.observe(time.perf_counter() - started)
        await self._delete_staged(request.files)

    async def _resumable(self, request: IngestRequest, job: Job, progress: Progress) -> bool:
        """Whether a final job is still to be done: an observer failed it as lost (it went
        silent: this service stopped, e.g. cut from the broker) rather than this service ending
        it, and a file it had not handled is still staged, or it had handled them all (it stopped
        just before saving its end). A lost job whose unhandled files are gone is failed for good
        here (`staged_files_gone`) and saved, so its poller stops waiting. Raises ServiceUnavailable."""
        if not job.resumable:
            return False
        left = progress.unhandled(request.files)
        for staged in left:
            if await self.store.exists(staged.key):
                return True
        if left:
            log.warning("ingest job %s was reported %s and its staged files are gone; it stays failed",
                        job.job_id, WORKER_LOST)
            # no longer resumable: say so, so a poller or the page stops waiting for it
            job.fail("staged_files_gone", f"the upload service stopped and the {len(left)} files it had not "
                                          "handled are no longer staged; upload them again")
            await self.jobs.save(job)
        return not left  # every file handled: only its final record is missing

    async def _requeue_or_raise(self, request: IngestRequest, attempt: int, exc: BaseException) -> None:
        """Publish the job again with the next attempt number; past the limit, raise `exc`
        (the message is dead-lettered: the job record could not even be read or written)."""
        if attempt >= self.settings.max_attempts:
            raise exc
        self.metrics.requeues.inc()
        await self.bus.publish(self.topology.ingest.name, encode(request),
                               headers={ATTEMPT_HEADER: attempt + 1})

    async def _fail(self, request: IngestRequest, job: Job, progress: Progress, exc: BaseException) -> None:
        """Final failure: the job's record lists what it stored; its staged uploads go. Raises
        when even the record cannot be saved (the message is then dead-lettered)."""
        job.state, job.error = "failed", ErrorInfo.from_exception(exc)
        job.result = result = progress.result(unfinished=True)
        job.note(f"failed ({job.error.code}) after storing {result.stored} files: {job.error.message}")
        await self._end_batch(request.job_id)
        await self.jobs.save(job)
        self.metrics.jobs.labels("failed").inc()
        await self._delete_staged(request.files)

    async def _end_batch(self, job_id: str) -> None:
        try:
            await self.catalog.write_batch("upload", job_id)
        except DermaScanError as exc:  # the parts stay catalogued; only the gathering waits
            log.warning("ingest job %s: catalog batch not gathered: %s", job_id, exc)

    async def _delete_staged(self, files: list[StagedFile]) -> None:
        """Best effort, one try each: the job is over, its record says so; a store that fails
        here leaves the rest for the operator's bucket lifecycle rule."""
        for staged in files:
            try:
                await self.raw_store.delete(staged.key)
            except Exception as exc:  # noqa: BLE001 - the job's outcome does not depend on it
                log.warning("staged upload %s not deleted: %s", staged.key, exc)
                return

    async def _ingest(self, request: IngestRequest, job: Job, progress: Progress) -> None:
        last_save = time.monotonic()
        budget = archives.JobBudget(self.settings.max_job_zip_bytes)
        for staged in request.files:
            slot = slot_of(staged)
            if slot in progress.handled:
                continue  # an earlier attempt handled it and saved its outcome
            try:
                data = await self.store.get(staged.key)
            except NotFound:
                progress.add(self._rejected(slot, staged.filename, BadRequest(
                    "the staged upload is gone", code="upload_lost")))
            else:
                if archives.is_zip(data):
                    await self._archive(request, staged, slot, data, budget, progress)
                else:
                    label = request.label or class_from_filename(staged.filename)
                    progress.add(await self._one(slot, staged.filename, data, label, request.job_id,
                                                 progress))
            progress.file_done(slot, staged.key)
            if time.monotonic() - last_save >= self.settings.progress_every_s:
                await self._checkpoint(job, progress)
                last_save = time.monotonic()
        await self._end_batch(request.job_id)

    async def _checkpoint(self, job: Job, progress: Progress) -> None:
        """Save the outcomes of the files handled so far, then delete their staged uploads."""
        job.progress.update(progress.saved_state())
        job.result = progress.result()
        await self.jobs.save(job)
        for key in progress.take_deletable():
            await self.store.delete(key)

    async def _archive(self, request: IngestRequest, staged: StagedFile, slot: int, data: bytes,
                       budget: archives.JobBudget, progress: Progress) -> None:
        try:
            members = archives.members(data, self.limits, budget)
            member = await asyncio.to_thread(next, members, None)  # opening reads the directory
        except DermaScanError as exc:
            progress.add(self._rejected(slot, staged.filename, exc))
            return
        while member is not None:
            name = f"{staged.filename}:{member.name}"
            index = progress.next_index()
            if member.error is not None or member.data is None:
                progress.add(self._rejected(index, name, member.error or BadRequest("unreadable")))
            else:
                label = request.label or member.label
                progress.add(await self._one(index, name, member.data, label, request.job_id, progress))
            member = await asyncio.to_thread(next, members, None)  # one member in memory at a time

    def _rejected(self, index: int, filename: str, exc: Exception) -> FileOutcome:
        info = ErrorInfo.from_exception(exc)
        self.metrics.files.labels("rejected", info.code).inc()
        return FileOutcome(index=index, filename=filename, status="rejected", reason=info.code,
                           message=info.message)

    async def _one(self, index: int, filename: str, data: bytes, label: str | None, job_id: str,
                   progress: Progress) -> FileOutcome:
        if label is None:
            return self._rejected(index, filename, BadRequest(
                "no class: name the file <class>_<anything>.<ext>, put it in a <class>/ folder "
                "of a zip, or send a 'label' field", code="unknown_class"))
        try:
            image = await asyncio.to_thread(clean_image, data, max_pixels=self.settings.max_pixels,
                                            budget=self.decode_budget)
        except DermaScanError as exc:
            return self._rejected(index, filename, exc)
        existing = await self.catalog.find(image.sha256)
        if image.sha256 in progress.stored or (existing is not None and existing.job_id != job_id):
            self.metrics.files.labels("duplicate", "same_bytes").inc()
            known = existing.label if existing else label
            return FileOutcome(index=index, filename=filename, status="duplicate", sha256=image.sha256,
                               label=known, message=f"the same image is already stored as {known}")
        if existing is not None:  # stored and catalogued by an earlier attempt of this job
            return FileOutcome(index=index, filename=filename, status="stored", sha256=image.sha256,
                               label=existing.label, key=existing.key)
        record = ImageRecord(
            sha256=image.sha256, label=label, key=image_key(label, image.sha256, image.format),
            split=split_for(lesion_group(image.sha256, None), await self._secret()), source="upload",
            filename=filename.replace("\\", "/").rsplit("/", 1)[-1],
            job_id=job_id, width=image.width, height=image.height, format=image.format,
            bytes=len(image.data))
        await self.catalog.add_image(record, image.data)  # catalogued now, whatever happens next
        self.metrics.files.labels("stored", "ok").inc()
        self.metrics.stored_bytes.inc(len(image.data))
        return FileOutcome(index=index, filename=filename, status="stored", sha256=image.sha256, label=label,
                           key=record.key)

    async def _secret(self) -> bytes:
        """The split secret, read (or created) through the retrying store the first time; a store
        that stays down raises StoreUnavailable, which requeues the job like any store call."""
        if self._split_secret is None:
            self._split_secret = await load_split_secret(self.store, self.settings.split_secret)
        return self._split_secret
