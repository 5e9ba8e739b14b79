"""The ingest service: one upload job at a time from the ingest queue, every file accounted for.

The message is acknowledged only after the job record is final, so a crash mid-job means the
job is redone (idempotently: images are content-addressed) rather than lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from ingest_service import archives
from ingest_service.metrics import IngestMetrics
from ingest_service.settings import IngestSettings
from shared.bus import Delivery, MessageBus, Subscription
from shared.catalog import Catalog, ImageRecord, image_key, split_for
from shared.errors import BadRequest, DermaScanError, NotFound
from shared.jobs import JobStore
from shared.messages import ErrorInfo, IngestRequest, decode
from shared.sanitize import clean_image
from shared.store import ObjectStore
from shared.taxonomy import class_from_filename

log = logging.getLogger(__name__)
_PROGRESS_EVERY_S = 1.0


class IngestService:
    """Consumes ingest jobs. `start()` then `stop()`; loop-only."""

    def __init__(self, settings: IngestSettings, bus: MessageBus, store: ObjectStore,
                 metrics: IngestMetrics) -> None:
        self.settings, self.bus, self.store, self.metrics = settings, bus, store, metrics
        self.catalog = Catalog(store)
        self.jobs = JobStore(store)
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        while not self.bus.connected:
            await asyncio.sleep(0.5)
        await self.bus.declare_queue(self.settings.ingest_queue)
        self._subscription = await self.bus.consume(self.settings.ingest_queue, self._on_job, prefetch=1)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.cancel()

    async def _on_job(self, delivery: Delivery) -> None:
        request = decode(IngestRequest, delivery.body)  # a malformed message is dead-lettered
        started = time.perf_counter()
        try:
            job = await self.jobs.get(request.job_id)
        except NotFound:
            log.error("ingest job %s has no record; dead-lettering", request.job_id)
            raise
        if job.final:
            return  # redelivered after it was finished
        job.state = "running"
        await self.jobs.save(job)
        try:
            outcomes = await self._ingest(request, list((job.result or {}).get("files", [])), job)
        except Exception as exc:
            log.exception("ingest job %s failed", job.job_id)
            job.state, job.error = "failed", ErrorInfo.from_exception(exc)
            await self.jobs.save(job)
            self.metrics.jobs.labels("failed").inc()
            return
        tally = Counter(o["status"] for o in outcomes)
        job.state = "succeeded"
        job.progress["done"] = job.progress.get("files", len(outcomes))
        job.result = {"files": outcomes, **{k: tally.get(k, 0) for k in ("stored", "duplicate", "rejected")}}
        job.note(f"stored {tally['stored']}, duplicates {tally['duplicate']}, rejected {tally['rejected']}")
        await self.jobs.save(job)
        self.metrics.jobs.labels("succeeded").inc()
        self.metrics.job_seconds.observe(time.perf_counter() - started)
        for staged in request.files:
            await self.store.delete(staged.key)

    async def _ingest(self, request: IngestRequest, outcomes: list[dict[str, Any]], job: Any) -> list[dict[str, Any]]:
        records: list[ImageRecord] = []
        seen: set[str] = set()
        last_save = time.monotonic()
        already_done = job.progress.get("done", 0)
        index = len(outcomes) + len(request.files)
        for number, staged in enumerate(request.files):
            data = await self.store.get(staged.key)
            slot = int(staged.key.rsplit("/", 1)[-1])
            if archives.is_zip(data):
                try:
                    members = list(archives.members(
                        data, max_members=self.settings.max_zip_members,
                        max_member_bytes=self.settings.max_member_bytes,
                        max_total_bytes=self.settings.max_zip_bytes))
                except DermaScanError as exc:
                    outcomes.append(self._rejected(slot, staged.filename, exc))
                    continue
                for member in members:
                    name = f"{staged.filename}:{member.name}"
                    label = request.label or member.label
                    if member.error is not None or member.data is None:
                        outcomes.append(self._rejected(index, name, member.error or BadRequest("unreadable")))
                    else:
                        outcomes.append(await self._one(index, name, member.data, label, request.job_id, records, seen))
                    index += 1
            else:
                label = request.label or class_from_filename(staged.filename)
                outcomes.append(await self._one(slot, staged.filename, data, label, request.job_id, records, seen))
            if time.monotonic() - last_save > _PROGRESS_EVERY_S:
                job.progress["done"] = already_done + number + 1
                await self.jobs.save(job)
                last_save = time.monotonic()
        await self.catalog.write_batch("upload", request.job_id, records)
        return sorted(outcomes, key=lambda o: o["index"])

    def _rejected(self, index: int, filename: str, exc: Exception) -> dict[str, Any]:
        info = ErrorInfo.from_exception(exc)
        self.metrics.files.labels("rejected", info.code).inc()
        return {"index": index, "filename": filename, "status": "rejected", "reason": info.code,
                "message": info.message}

    async def _one(self, index: int, filename: str, data: bytes, label: str | None, job_id: str,
                   records: list[ImageRecord], seen: set[str]) -> dict[str, Any]:
        if label is None:
            return self._rejected(index, filename, BadRequest(
                "no class: name the file <class>_<anything>.<ext>, put it in a <class>/ folder "
                "of a zip, or send a 'label' field", code="unknown_class"))
        try:
            image = await asyncio.to_thread(clean_image, data, max_pixels=self.settings.max_pixels)
        except DermaScanError as exc:
            return self._rejected(index, filename, exc)
        existing = await self.catalog.find(image.sha256)
        outcome = {"index": index, "filename": filename, "sha256": image.sha256, "label": label}
        if image.sha256 in seen or (existing is not None and existing.job_id != job_id):
            self.metrics.files.labels("duplicate", "same_bytes").inc()
            known = existing.label if existing else label
            return {**outcome, "status": "duplicate", "label": known,
                    "message": f"the same image is already stored as {known}"}
        record = ImageRecord(
            sha256=image.sha256, label=label, key=image_key(label, image.sha256, image.format),
            split=split_for(image.sha256), source="upload", filename=filename.rsplit("/", 1)[-1],
            job_id=job_id, width=image.width, height=image.height, format=image.format,
            bytes=len(image.data))
        await self.catalog.add_image(record, image.data)
        records.append(record)
        seen.add(image.sha256)
        self.metrics.files.labels("stored", "ok").inc()
        self.metrics.stored_bytes.inc(len(image.data))
        return {**outcome, "status": "stored", "key": record.key, "split": record.split}
