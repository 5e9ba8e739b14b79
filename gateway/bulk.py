"""`POST /upload-bulk` (alias `/uploads`; the `contribute` role): many labelled files in, one
ingest job out (202).

Files are streamed part by part and staged in the object store before the job is queued, so an
accepted upload survives a gateway restart; nothing is decoded here.
"""

from __future__ import annotations

from urllib.parse import unquote

from aiohttp import BodyPartReader, web

from gateway.audit import AUDIT_DRAFT
from gateway.keys import BUS, JOBS, METRICS, SETTINGS, STORE
from gateway.limits import UPLOAD_BYTES, receiving
from gateway.ratelimit import RATE_LIMITS
from gateway.schemas import JobAccepted
from gateway.uploads import FRAMING_BYTES, declared_size, filename, parts, read_part, release
from shared.errors import DermaScanError, PayloadTooLarge, Unprocessable
from shared.jobs import FileOutcome, IngestResult, Job
from shared.messages import IngestRequest, StagedFile, encode
from shared.taxonomy import CLASSES, is_known

FILE_FIELDS = frozenset({"files", "file"})
#: Longest `label` field read (class names are short).
MAX_LABEL_BYTES = 256


def clean_filename(sent: str | None, index: int) -> str:
    """The name a file is reported under: as sent, percent-decoded (some clients encode
    "..%2Fmelanoma_1.jpg"), without control characters, at most 255 characters. Names are
    labels, never paths."""
    name = "".join(c for c in unquote(sent or "") if c.isprintable())[:255]
    return name or f"file-{index}"


async def upload_bulk(request: web.Request) -> web.Response:
    """Stage every file of the form and queue one ingest job (202). Raises Unprocessable (not
    multipart, no files, unknown label), PayloadTooLarge (request or file count over the
    limits), RateLimited (the token's hourly upload quota), Overloaded (the gateway's bytes in
    flight), RequestTimeout (slower than `DERMASCAN_UPLOAD_TIMEOUT_S`), BadRequest (malformed)."""
    app = request.app
    settings = app[SETTINGS]
    declared = declared_size(request, settings.max_request_bytes, code="request_too_large")
    if request.content_length is not None:
        app[RATE_LIMITS].upload(request, request.content_length)
    job = Job(kind="ingest")
    request[AUDIT_DRAFT].target = job.job_id
    with app[UPLOAD_BYTES].reserve(min(declared, settings.max_file_bytes + FRAMING_BYTES)):
        async with receiving(settings.upload_timeout_s, "the upload"):
            label, staged, outcomes, total = await _stage(request, job)
    return await _queue(request, job, label, staged, outcomes, total)


async def _stage(request: web.Request,
                 job: Job) -> tuple[str | None, list[StagedFile], list[FileOutcome], int]:
    """Read the form part by part, staging each file in the store as it arrives."""
    app = request.app
    settings, store = app[SETTINGS], app[STORE]
    metered = request.content_length is None  # then the quota is charged file by file
    staged: list[StagedFile] = []
    outcomes: list[FileOutcome] = []
    label: str | None = None
    total = 0
    async for part in parts(request, "one or more 'files' fields"):
        if part.name == "label":
            label = await _label(part)
            continue
        if part.name not in FILE_FIELDS:
            await release(part)
            continue
        index = len(staged) + len(outcomes)
        if index >= settings.max_files_per_request:
            raise PayloadTooLarge(f"at most {settings.max_files_per_request} files per request",
                                  code="too_many_files")
        name = clean_filename(filename(part), index)
        try:
            data = await read_part(part, settings.max_file_bytes)
        except PayloadTooLarge as exc:
            await release(part)
            outcomes.append(FileOutcome(index=index, filename=name, status="rejected", reason="too_large",
                                        message=exc.message))
            continue
        total += len(data)
        if total > settings.max_request_bytes:
            raise PayloadTooLarge(f"the request is larger than {settings.max_request_bytes:,} bytes",
                                  code="request_too_large")
        if metered:
            app[RATE_LIMITS].upload(request, len(data))
        key = f"uploads/{job.job_id}/{index:05d}"
        await store.put(key, data)
        staged.append(StagedFile(key=key, filename=name, size=len(data)))
        app[METRICS].upload_bytes.labels("/upload-bulk").inc(len(data))
    return label, staged, outcomes, total


async def _label(part: BodyPartReader) -> str | None:
    try:  # read raw: part.text() would inflate a part sent with Content-Encoding: gzip
        text = (await read_part(part, MAX_LABEL_BYTES)).decode("utf-8", "replace")
    except PayloadTooLarge:
        raise Unprocessable(f"the label is longer than {MAX_LABEL_BYTES} bytes",
                            code="unknown_label") from None
    return text.strip().lower() or None


async def _queue(request: web.Request, job: Job, label: str | None, staged: list[StagedFile],
                 outcomes: list[FileOutcome], total: int) -> web.Response:
    app = request.app
    settings, jobs = app[SETTINGS], app[JOBS]
    draft = request[AUDIT_DRAFT]
    if label is not None and not is_known(label):
        raise Unprocessable(f"unknown label {label!r}; known: {', '.join(CLASSES)}", code="unknown_label")
    if not staged and not outcomes:
        raise Unprocessable("the form has no 'files' field", code="missing_field")
    job.progress = {"files": len(staged) + len(outcomes), "done": len(outcomes)}
    job.result = IngestResult.of(outcomes)
    job.note(f"received {len(staged) + len(outcomes)} files ({total:,} bytes)")
    draft.detail = {"files": len(staged) + len(outcomes), "bytes": total, "label": label}
    if not staged:
        job.state = "succeeded"
        await jobs.save(job)
        return _accepted(job)
    await jobs.save(job)
    message = IngestRequest(job_id=job.job_id, files=staged, label=label)
    try:
        await app[BUS].publish(settings.ingest_queue, encode(message))
    except DermaScanError as exc:
        job.state, job.error = "failed", None
        job.note(f"could not queue the job: {exc.message}")
        await jobs.save(job)
        raise
    return _accepted(job)


def _accepted(job: Job) -> web.Response:
    body = JobAccepted(job_id=job.job_id, kind=job.kind, state=job.state, files=job.progress.get("files", 0),
                       status_url=f"/jobs/{job.job_id}")
    return web.json_response(body.model_dump(mode="json"), status=202, headers={"Location": body.status_url})
