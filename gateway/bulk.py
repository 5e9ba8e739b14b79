"""`POST /upload-bulk` (the `contribute` role): many labelled files in, one
ingest job out (202).

The form is what the OpenAPI document says: one or more `files` parts and at most one `label`;
any other field is a 422 `invalid_form` naming it. Files are streamed part by part and staged in
the object store before the job is queued, so an accepted upload survives a gateway restart;
nothing is decoded here. What can be refused before the first file is staged is refused then
(the declared size, the quota, a label or a field sent first); a request refused after that (too
many files, too large, a label or a field sent last, a quota spent, a client that left, a store
or broker that failed) deletes what it staged before it answers. Once
the job is queued its staged files are the ingest service's to delete.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from urllib.parse import unquote

from aiohttp import BodyPartReader, web

from gateway.audit import AUDIT_DRAFT
from gateway.keys import BUS, JOBS, METRICS, SETTINGS, STORE
from gateway.limits import UPLOAD_BYTES, Holding, Pace, paced
from gateway.ratelimit import RATE_LIMITS, caller
from gateway.schemas import JobAccepted
from gateway.uploads import declared_size, filename, parts, read_part, release
from shared.errors import DermaScanError, PayloadTooLarge, Unprocessable
from shared.jobs import FileOutcome, IngestResult, Job
from shared.messages import IngestRequest, StagedFile, encode
from shared.store import ObjectStore
from shared.taxonomy import CLASSES, is_known

log = logging.getLogger(__name__)
#: The form's fields, as the OpenAPI document declares them; any other is refused.
FILES, LABEL = "files", "label"
#: Longest `label` field read (class names are short).
MAX_LABEL_BYTES = 256
#: Staged files deleted at once when a request is refused.
_DELETE_CONCURRENCY = 8


def clean_filename(sent: str | None, index: int) -> str:
    """The name a file is reported under: as sent, percent-decoded (some clients encode
    "..%2Fmelanoma_1.jpg"), without control characters, at most 255 characters. Names are
    labels, never paths."""
    name = "".join(c for c in unquote(sent or "") if c.isprintable())[:255]
    return name or f"file-{index}"


@dataclass
class Form:
    """What the form brought: its label, the files staged, the files refused one by one."""

    label: str | None = None
    labelled: bool = False
    staged: list[StagedFile] = field(default_factory=list)
    outcomes: list[FileOutcome] = field(default_factory=list)
    total: int = 0

    @property
    def files(self) -> int:
        return len(self.staged) + len(self.outcomes)


class Staging:
    """The files one request staged under `uploads/<job_id>/`. Until `handed_over()` (the job
    is queued) they are this request's: `discard()` deletes them. Loop-only."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.keys: list[str] = []
        self._handed_over = False

    async def put(self, key: str, data: bytes) -> None:
        self.keys.append(key)  # first: a put that fails part-way may still leave the object
        await self.store.put(key, data)

    def handed_over(self) -> None:
        """The job is queued: the ingest service deletes the files when it is done."""
        self._handed_over = True

    async def discard(self) -> None:
        """Delete every staged file, a few at a time; best effort: after the first failure (the
        store is down) the rest is logged and left to the bucket's lifecycle rule."""
        if self._handed_over or not self.keys:
            return
        gate, failed = asyncio.Semaphore(_DELETE_CONCURRENCY), list[Exception]()

        async def delete(key: str) -> None:
            async with gate:
                if failed:
                    return
                try:
                    await self.store.delete(key)
                except Exception as exc:  # noqa: BLE001 - the refusal stands whatever the store says
                    failed.append(exc)

        await asyncio.gather(*(delete(key) for key in self.keys))
        if failed:
            log.warning("a refused upload left staged files under %s (not deleted: %s)",
                        self.keys[0].rsplit("/", 1)[0], failed[0])
        self.keys = []


@dataclass
class Intake:
    """How one request takes in its files' bytes as they arrive: held against the gateway's
    budget (one file at a time), charged to the token's quota, and at the minimum pace."""

    request: web.Request
    holding: Holding
    pace: Pace

    def take(self, size: int) -> None:
        """`size` bytes of a file arrived; raises Overloaded or RateLimited when they do not fit."""
        self.holding.take(size)
        self.request.app[RATE_LIMITS].upload(self.request, size)


async def upload_bulk(request: web.Request) -> web.Response:
    """Stage every file of the form and queue one ingest job (202). Raises Unprocessable (not
    multipart, no files, unknown label, a field other than `files` and one `label`),
    PayloadTooLarge (request or file count over the limits), RateLimited (the token's hourly
    upload quota), Overloaded (the bytes in flight: the caller's share or the gateway's),
    RequestTimeout (slower than the minimum pace or `DERMASCAN_UPLOAD_TIMEOUT_S`), BadRequest
    (malformed, or the client left). Whatever it raises, no staged file is left behind."""
    app = request.app
    settings = app[SETTINGS]
    declared_size(request, settings.max_request_bytes, code="request_too_large")
    app[RATE_LIMITS].check_upload(request, request.content_length)
    job = Job(kind="ingest")
    request[AUDIT_DRAFT].target = job.job_id
    staging = Staging(app[STORE])
    try:
        share = settings.max_upload_bytes_in_flight_per_caller
        with app[UPLOAD_BYTES].hold(caller(request), share) as holding:
            async with paced(settings, request, settings.upload_timeout_s, "the upload") as pace:
                form = await _stage(request, job, staging, Intake(request, holding, pace))
        return await _queue(request, job, form, staging)
    finally:
        await staging.discard()


async def _stage(request: web.Request, job: Job, staging: Staging, intake: Intake) -> Form:
    """Read the form part by part, staging each file in the store as it arrives."""
    settings = request.app[SETTINGS]
    form = Form()
    async for part in parts(request, "one or more 'files' fields"):
        if part.name == LABEL:
            if form.labelled:
                raise Unprocessable("the form has more than one 'label' field; send one", code="invalid_form")
            form.label, form.labelled = await _label(part), True
        elif part.name != FILES:
            raise Unprocessable(f"unknown form field {_shown(part.name)}: send each file as a 'files' field "
                                "and the class of all of them as one 'label'", code="invalid_form")
        elif form.files >= settings.max_files_per_request:
            raise PayloadTooLarge(f"at most {settings.max_files_per_request} files per request",
                                  code="too_many_files")
        else:
            try:
                await _stage_file(request, job, part, staging, intake, form)
            finally:
                intake.holding.give_back(intake.holding.held)  # one file at a time is held
    return form


async def _stage_file(request: web.Request, job: Job, part: BodyPartReader, staging: Staging,
                      intake: Intake, form: Form) -> None:
    settings = request.app[SETTINGS]
    index = form.files
    name = clean_filename(filename(part), index)
    try:
        data = await read_part(part, settings.max_file_bytes, intake.take)
    except PayloadTooLarge as exc:
        if exc.code != "file_too_large":  # the quota's refusal is the request's
            raise
        await release(part)
        form.outcomes.append(FileOutcome(index=index, filename=name, status="rejected", reason="too_large",
                                         message=exc.message))
        return
    form.total += len(data)
    if form.total > settings.max_request_bytes:  # a chunked body declares no length
        raise PayloadTooLarge(f"the request is larger than {settings.max_request_bytes:,} bytes",
                              code="request_too_large")
    key = f"uploads/{job.job_id}/{index:05d}"
    with intake.pace.paused():  # the store's time, not the client's
        await staging.put(key, data)
    form.staged.append(StagedFile(key=key, filename=name, size=len(data)))
    request.app[METRICS].upload_bytes.labels("/upload-bulk").inc(len(data))


def _shown(name: str | None) -> str:
    """A part's field name as a refusal quotes it: printable, short."""
    if name is None:
        return "(a part with no name)"
    return repr("".join(c for c in name if c.isprintable())[:40])


async def _label(part: BodyPartReader) -> str | None:
    """The label, refused at once when it is unknown (sent before the files, before any is
    staged)."""
    try:  # read raw: part.text() would inflate a part sent with Content-Encoding: gzip
        text = (await read_part(part, MAX_LABEL_BYTES)).decode("utf-8", "replace")
    except PayloadTooLarge:
        raise Unprocessable(f"the label is longer than {MAX_LABEL_BYTES} bytes",
                            code="unknown_label") from None
    label = text.strip().lower() or None
    if label is not None and not is_known(label):
        raise Unprocessable(f"unknown label {label!r}; known: {', '.join(CLASSES)}", code="unknown_label")
    return label


async def _queue(request: web.Request, job: Job, form: Form, staging: Staging) -> web.Response:
    app = request.app
    settings, jobs = app[SETTINGS], app[JOBS]
    draft = request[AUDIT_DRAFT]
    if not form.files:
        raise Unprocessable("the form has no 'files' field", code="missing_field")
    job.progress = {"files": form.files, "done": len(form.outcomes)}
    job.result = IngestResult.of(form.outcomes)
    job.note(f"received {form.files} files ({form.total:,} bytes)")
    draft.detail = {"files": form.files, "bytes": form.total, "label": form.label}
    if not form.staged:
        job.state = "succeeded"
        await jobs.save(job)
        return _accepted(job)
    await jobs.save(job)
    message = IngestRequest(job_id=job.job_id, files=form.staged, label=form.label)
    try:
        await app[BUS].publish(settings.ingest_queue, encode(message))
    except DermaScanError as exc:
        job.state, job.error = "failed", None
        job.note(f"could not queue the job: {exc.message}")
        await jobs.save(job)  # failed: the ingest service would skip it, were it queued after all
        raise
    staging.handed_over()
    return _accepted(job)


def _accepted(job: Job) -> web.Response:
    body = JobAccepted(job_id=job.job_id, kind=job.kind, state=job.state, files=job.progress.get("files", 0),
                       status_url=f"/jobs/{job.job_id}")
    return web.json_response(body.model_dump(mode="json"), status=202, headers={"Location": body.status_url})
