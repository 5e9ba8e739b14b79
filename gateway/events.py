"""`GET /jobs/{job_id}/events`: a job's record pushed as server-sent events while it changes.

The stream reads the job record (the one the ingest and trainer services write their progress
into) every `DERMASCAN_EVENTS_POLL_S` and sends it as an `event: job` whenever its `updated_at`
moved; after the record is over (`over`) it sends it a last time as `event: end` and closes. An
upload reported `worker_lost` whose error says `retryable` is not over although its state is
`failed`: its ingest service resumes it when the broker delivers its message again, so its stream
goes on as for a running job (to `running` again, then its real end, or `DERMASCAN_EVENTS_MAX_S`);
a training job's `worker_lost` is not retryable and ends the stream. Any gateway can serve any
job's stream: the record is in the store. A comment line every `KEEPALIVE_S` keeps proxies from
closing a quiet stream; a store that stops answering for a while is an `event: waiting`, not the
end of the stream. A browser's EventSource reconnects to a stream
that ended; when it says (`Last-Event-ID`) that it already has the record that is over, the
answer is `204 No Content`, which tells it to stop (one that has a resumable upload's record gets
a fresh stream: the job is not over). When the gateway shuts down every open stream ends at
once (`event: closing`), so an open page never holds up a drain. At most
`DERMASCAN_EVENTS_MAX_STREAMS` are open at once (then 429: the page polls the job instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from aiohttp import web

from gateway.jobs import public
from gateway.keys import JOBS, SETTINGS
from shared.errors import DermaScanError, NotFound, Overloaded
from shared.jobs import Job

log = logging.getLogger(__name__)
KEEPALIVE_S = 15.0
#: Set when the application shuts down: every stream ends.
CLOSING = web.AppKey("events_closing", asyncio.Event)
#: The streams open now, by job id (one entry per stream).
OPEN = web.AppKey("events_open", list[str])


def setup(app: web.Application) -> None:
    """Give `app` the shutdown signal its event streams follow, and their count."""
    app[CLOSING] = asyncio.Event()
    app[OPEN] = []

    async def close_streams(app: web.Application) -> None:
        app[CLOSING].set()

    app.on_shutdown.append(close_streams)


def frame(event: str, data: dict[str, object], event_id: str | None = None) -> bytes:
    """One server-sent event: `event`, its JSON `data` on one line, and an optional id."""
    lines = [f"event: {event}"] + ([f"id: {event_id}"] if event_id else []) + [f"data: {json.dumps(data)}"]
    return ("\n".join(lines) + "\n\n").encode()


def over(job: Job) -> bool:
    """Whether `job` will not change again, so its stream ends: final, and not an upload an
    observer reported `worker_lost` with a `retryable` error (its service resumes it when it gets
    the job's message again: `Job.resume`). The page's `over` (static/dom.js) is the same rule."""
    return job.final and not job.resumable


def _as_data(job: Job) -> dict[str, object]:
    return public(job)


async def job_events(request: web.Request) -> web.StreamResponse:
    """Stream the job's record as it changes; 404 (before the stream starts) for an unknown job."""
    jobs, settings = request.app[JOBS], request.app[SETTINGS]
    job_id = request.match_info["job_id"]
    job = await jobs.load(job_id, stale_after_s=settings.job_stale_s)  # NotFound: a plain 404
    if over(job) and request.headers.get("Last-Event-ID") == job.updated_at.isoformat():
        return web.Response(status=204)
    streams = request.app[OPEN]
    if len(streams) >= settings.events_max_streams:
        raise Overloaded(f"this gateway has {len(streams)} event streams open, its most; follow the job with "
                         f"GET /jobs/{job_id} instead", code="too_many_streams")
    streams.append(job_id)
    try:
        return await _stream(request, job)
    finally:
        streams.remove(job_id)


async def _stream(request: web.Request, job: Job) -> web.StreamResponse:
    jobs, settings = request.app[JOBS], request.app[SETTINGS]
    job_id = job.job_id
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    closing = request.app[CLOSING]
    deadline = loop.time() + settings.events_max_s
    sent_at, quiet_since = None, loop.time()
    try:
        while not _left(request):
            if over(job):
                await response.write(frame("end", _as_data(job), job.updated_at.isoformat()))
                break
            if job.updated_at != sent_at:
                await response.write(frame("job", _as_data(job), job.updated_at.isoformat()))
                sent_at, quiet_since = job.updated_at, loop.time()
            elif loop.time() - quiet_since > KEEPALIVE_S:
                await response.write(b": still running\n\n")
                quiet_since = loop.time()
            if loop.time() > deadline:
                break  # the client's EventSource reconnects and gets a fresh stream
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), settings.events_poll_s)
            if closing.is_set():
                await response.write(frame("closing", {"job_id": job_id,
                                                       "message": "the gateway is stopping"}))
                break
            try:
                job = await jobs.load(job_id, stale_after_s=settings.job_stale_s)
            except NotFound:
                await response.write(frame("gone", {"job_id": job_id, "message": "the job record is gone"}))
                break
            except DermaScanError as exc:  # its text may quote an exception: logged, not sent
                log.warning("job %s's event stream cannot read the record: %s", job_id, exc.message[:500])
                await response.write(frame("waiting", {"job_id": job_id, "message": "the job record is "
                                                       "unavailable right now; the stream goes on"}))
    except ConnectionResetError:  # the client left between our check and a write: not an error
        log.debug("the client of job %s's event stream left", job_id)
    return response


def _left(request: web.Request) -> bool:
    """Whether the client closed the connection (the server does not cancel the handler then)."""
    return request.transport is None or request.transport.is_closing()
