"""`POST /upload-bulk` (alias `/uploads`; the `contribute` role): many labelled files in, one
ingest job out (202).

Files are streamed part by part and staged in the object store before the job is queued, so an
accepted upload survives a gateway restart; nothing is decoded here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from aiohttp import BodyPartReader, web

from gateway.audit import AUDIT_DRAFT
from gateway.keys import BUS, JOBS, METRICS, SETTINGS, STORE
from gateway.uploads import read_part
from shared.errors import DermaScanError, PayloadTooLarge, Unprocessable
from shared.jobs import Job
from shared.messages import IngestRequest, StagedFile, encode
from shared.taxonomy import CLASSES, is_known

FILE_FIELDS = frozenset({"files", "file"})


async def upload_bulk(request: web.Request) -> web.Response:
    app = request.app
    settings, store, jobs = app[SETTINGS], app[STORE], app[JOBS]
    if request.content_length is not None and request.content_length > settings.max_request_bytes:
        raise PayloadTooLarge(f"the request is larger than {settings.max_request_bytes:,} bytes",
                              code="request_too_large")
    if not request.content_type.startswith("multipart/"):
        raise Unprocessable("send multipart/form-data with one or more 'files' fields", code="missing_field")
    job = Job(kind="ingest")
    draft = request[AUDIT_DRAFT]
    draft.target = job.job_id
    staged: list[StagedFile] = []
    outcomes: list[dict[str, Any]] = []
    label: str | None = None
    total = 0
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            await part.release()
            continue
        if part.name == "label":
            label = (await part.text()).strip().lower() or None
            continue
        if part.name not in FILE_FIELDS:
            await part.release()
            continue
        index = len(staged) + len(outcomes)
        # Some clients percent-encode names ("..%2Fmelanoma_1.jpg"); names are labels, never paths.
        filename = unquote(part.filename or f"file-{index}")[:255]
        if len(staged) + len(outcomes) >= settings.max_files_per_request:
            raise PayloadTooLarge(f"at most {settings.max_files_per_request} files per request",
                                  code="too_many_files")
        try:
            data = await read_part(part, settings.max_file_bytes)
        except PayloadTooLarge as exc:
            await part.release()
            outcomes.append({"index": index, "filename": filename, "status": "rejected",
                             "reason": "too_large", "message": exc.message})
            continue
        total += len(data)
        if total > settings.max_request_bytes:
            raise PayloadTooLarge(f"the request is larger than {settings.max_request_bytes:,} bytes",
                                  code="request_too_large")
        key = f"uploads/{job.job_id}/{index:05d}"
        await store.put(key, data)
        staged.append(StagedFile(key=key, filename=filename, size=len(data)))
        app[METRICS].upload_bytes.labels("/upload-bulk").inc(len(data))
    if label is not None and not is_known(label):
        raise Unprocessable(f"unknown label {label!r}; known: {', '.join(CLASSES)}", code="unknown_label")
    if not staged and not outcomes:
        raise Unprocessable("the form has no 'files' field", code="missing_field")
    job.progress = {"files": len(staged) + len(outcomes), "done": len(outcomes)}
    job.result = {"files": outcomes}
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
    body = {"job_id": job.job_id, "kind": job.kind, "state": job.state,
            "files": job.progress.get("files", 0), "status_url": f"/jobs/{job.job_id}"}
    return web.json_response(body, status=202, headers={"Location": f"/jobs/{job.job_id}"})
