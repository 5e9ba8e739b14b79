"""`GET /jobs/{job_id}/events`: a job's progress pushed as server-sent events while it runs, the
final record last, then the end of the stream (an upload reported `worker_lost` is not final yet:
it may resume)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.events import CLOSING, frame
from gateway.keys import JOBS
from shared.errors import NotFound
from shared.jobs import WORKER_LOST, Job, JobStore
from shared.store import StoreUnavailable
from tests.gateway.conftest import Client, MakeClient
from tests.support.http import form
from tests.support.tokens import CONTRIBUTOR

pytestmark = pytest.mark.timeout(60)


async def read_events(client: Client, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every (event, data) of the job's stream, until the server ends it."""
    response = await client.get(f"/jobs/{job_id}/events")
    assert response.status == 200 and response.content_type == "text/event-stream"
    events, event = [], None
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event is not None:
            events.append((event, json.loads(line.removeprefix("data: "))))
    return events


def test_an_event_is_one_json_line_with_its_name_and_id() -> None:
    assert frame("job", {"a": 1}, "t1") == b'event: job\nid: t1\ndata: {"a": 1}\n\n'


async def test_progress_arrives_while_the_job_runs_and_the_final_record_ends_the_stream(
        make_client: MakeClient) -> None:
    client = await make_client(with_worker=False, events_poll_s=0.02)
    jobs = client.app[JOBS]
    job = Job(kind="train", state="running", progress={"phase": "embedding", "embedded": 0})
    await jobs.save(job)
    reading = asyncio.create_task(read_events(client, job.job_id))

    async def advance(**progress: object) -> None:
        await asyncio.sleep(0.15)
        job.progress = {**job.progress, **progress}
        await jobs.save(job)

    await advance(embedded=10)
    await advance(phase="training", epoch=1, epochs=2, history=[{"epoch": 1, "loss": 0.9}])
    await advance(epoch=2, history=[{"epoch": 1, "loss": 0.9}, {"epoch": 2, "loss": 0.7}])
    job.state = "succeeded"
    await advance(phase="done")
    events = await asyncio.wait_for(reading, 10)
    names = [name for name, _ in events]
    assert names[-1] == "end" and names.count("end") == 1 and set(names[:-1]) == {"job"}
    running = [data["progress"] for name, data in events if name == "job"]
    assert [p.get("embedded") for p in running[:2]] == [0, 10]  # each change, in order, before the end
    assert running[-1]["history"][-1] == {"epoch": 2, "loss": 0.7}
    assert events[-1][1]["state"] == "succeeded" and events[-1][1]["progress"]["phase"] == "done"


async def test_a_real_upload_job_streams_to_its_outcome(make_client: MakeClient,
                                                        melanoma_jpeg: bytes) -> None:
    client = await make_client(with_worker=False, with_jobs=True)
    upload = form(melanoma_jpeg, name="files", filename="melanoma_1.jpg")
    response = await client.post("/upload-bulk", data=upload, headers=CONTRIBUTOR)
    assert response.status == 202, await response.text()
    events = await asyncio.wait_for(read_events(client, (await response.json())["job_id"]), 30)
    name, final = events[-1]
    assert name == "end" and final["state"] == "succeeded"
    assert [f["status"] for f in final["result"]["files"]] == ["stored"]


async def reported(jobs: JobStore, job_id: str, state: str) -> Job:
    """The job's record once it is `state` (the stream's own reads turn a silent job worker_lost)."""
    for _ in range(200):
        job = await jobs.get(job_id)
        if job.state == state:
            return job
        await asyncio.sleep(0.025)
    raise AssertionError(f"job {job_id} is {job.state}, never {state}")


async def test_an_upload_reported_worker_lost_is_followed_until_it_resumes_and_succeeds(
        make_client: MakeClient) -> None:
    client = await make_client(with_worker=False, events_poll_s=0.02, job_stale_s=1.0)
    jobs = client.app[JOBS]
    job = await jobs.save(Job(kind="ingest", state="running", progress={"files": 2, "done": 1}))
    reading = asyncio.create_task(read_events(client, job.job_id))
    lost = await reported(jobs, job.job_id, "failed")  # silent past DERMASCAN_JOB_STALE_S
    assert lost.error is not None and lost.error.code == WORKER_LOST and lost.error.retryable
    await asyncio.sleep(0.2)
    assert not reading.done()  # failed, but not over: the broker redelivers it to the service
    lost.resume("the ingest service got the job again")  # what ingest_service does on redelivery
    await jobs.save(lost)
    await asyncio.sleep(0.2)
    lost.state, lost.progress = "succeeded", {"files": 2, "done": 2}
    await jobs.save(lost)
    events = await asyncio.wait_for(reading, 10)
    records = [(name, data["state"], (data["error"] or {}).get("code")) for name, data in events]
    assert records == [("job", "running", None), ("job", "failed", WORKER_LOST), ("job", "running", None),
                       ("end", "succeeded", None)]
    assert events[-1][1]["progress"]["done"] == 2


async def test_a_training_job_reported_worker_lost_ends_its_stream(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False, events_poll_s=0.02, job_stale_s=0.3)
    job = await client.app[JOBS].save(Job(kind="train", state="running"))
    events = await asyncio.wait_for(read_events(client, job.job_id), 10)
    assert [(name, data["state"]) for name, data in events] == [("job", "running"), ("end", "failed")]
    error = events[-1][1]["error"]
    assert error["code"] == WORKER_LOST and error["retryable"] is False  # its claim was released


async def test_an_unknown_job_is_a_404_not_a_stream(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False)
    response = await client.get("/jobs/doesnotexist/events")
    assert response.status == 404 and (await response.json())["error"]["code"] == "not_found"


async def test_a_client_that_has_the_final_record_is_told_to_stop(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False)
    jobs = client.app[JOBS]
    job = await jobs.save(Job(kind="train", state="failed"))
    final_id = job.updated_at.isoformat()
    again = await client.get(f"/jobs/{job.job_id}/events", headers={"Last-Event-ID": final_id})
    assert again.status == 204  # what makes a browser's EventSource stop reconnecting
    older = await client.get(f"/jobs/{job.job_id}/events", headers={"Last-Event-ID": "2000-01-01T00:00:00"})
    assert older.status == 200 and "event: end" in await older.text()


async def test_a_client_that_has_a_resumable_uploads_record_gets_a_stream_not_a_stop(
        make_client: MakeClient) -> None:
    client = await make_client(with_worker=False)
    jobs = client.app[JOBS]
    job = Job(kind="ingest", state="running")
    job.fail(WORKER_LOST, "no progress for 61 s", retryable=True)  # as JobStore.load reports it
    await jobs.save(job)
    seen = {"Last-Event-ID": job.updated_at.isoformat()}
    again = await client.get(f"/jobs/{job.job_id}/events", headers=seen)
    assert again.status == 200  # an EventSource told 204 would stop following an upload that resumes
    assert (await again.content.readline()) == b"event: job\n"
    again.close()
    assert job.error is not None
    job.error = job.error.model_copy(update={"retryable": False})
    await jobs.save(job)  # a worker_lost that does not resume is over
    seen = {"Last-Event-ID": job.updated_at.isoformat()}
    final = await client.get(f"/jobs/{job.job_id}/events", headers=seen)
    assert final.status == 204


async def test_open_streams_end_when_the_gateway_shuts_down(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False)
    job = await client.app[JOBS].save(Job(kind="train", state="running"))
    reading = asyncio.create_task(read_events(client, job.job_id))
    await asyncio.sleep(0.3)
    assert not reading.done()  # a running job's stream stays open...
    client.app[CLOSING].set()  # ...until the application's on_shutdown signal
    names = [name for name, _ in await asyncio.wait_for(reading, 5)]
    assert names == ["job", "closing"]


async def test_a_client_that_leaves_ends_its_stream_without_an_error(
        make_client: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    client = await make_client(with_worker=False, events_poll_s=0.02)
    jobs = client.app[JOBS]
    job = await jobs.save(Job(kind="train", state="running", progress={"step": 0}))
    reads = 0
    load = jobs.load

    async def counted(job_id: str, **kwargs: Any) -> Job:
        nonlocal reads
        reads += 1
        return await load(job_id, **kwargs)

    jobs.load = counted  # type: ignore[method-assign]
    response = await client.get(f"/jobs/{job.job_id}/events")
    assert (await response.content.readline()).startswith(b"event: job")
    response.close()  # the page went away
    await asyncio.sleep(0.3)
    settled = reads
    await asyncio.sleep(0.3)
    assert reads == settled  # the stream stopped reading the store at once, not at its next write
    job.progress = {"step": 1}
    await jobs.save(job)
    await asyncio.sleep(0.3)
    assert "internal error" not in caplog.text
    metrics = await (await client.get("/metrics")).text()
    assert 'route="/jobs/{job_id}/events",status="500"' not in metrics.replace('method="GET",', "")


async def test_past_the_most_open_streams_a_stream_is_a_429_and_a_closed_one_frees_its_place(
        make_client: MakeClient) -> None:
    client = await make_client(with_worker=False, events_max_streams=1, events_poll_s=0.02)
    job = await client.app[JOBS].save(Job(kind="train", state="running"))
    first = await client.get(f"/jobs/{job.job_id}/events")
    assert first.status == 200
    refused = await client.get(f"/jobs/{job.job_id}/events")
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"
    body = await refused.json()
    assert body["error"]["code"] == "too_many_streams"
    assert f"GET /jobs/{job.job_id}" in body["error"]["message"]
    first.close()
    for _ in range(50):  # the stream notices its client left within a poll
        again = await client.get(f"/jobs/{job.job_id}/events")
        if again.status == 200:
            break
        await asyncio.sleep(0.05)
    assert again.status == 200
    again.close()


async def test_a_store_outage_mid_stream_is_waiting_in_words_of_ours(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False, events_poll_s=0.02)
    jobs = client.app[JOBS]
    job = await jobs.save(Job(kind="train", state="running"))
    load = jobs.load
    calls = 0

    async def failing(job_id: str, **kwargs: Any) -> Job:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first poll after the stream started
            raise StoreUnavailable("Could not connect to the endpoint URL: http://10.0.0.7:9000/private")
        if calls == 3:
            raise NotFound("the job is gone")  # ends the stream after the outage was reported
        return await load(job_id, **kwargs)

    jobs.load = failing  # type: ignore[method-assign]
    events = await asyncio.wait_for(read_events(client, job.job_id), 10)
    assert [name for name, _ in events] == ["job", "waiting", "gone"]
    waiting = events[1][1]
    assert "10.0.0.7" not in waiting["message"] and "unavailable" in waiting["message"]
