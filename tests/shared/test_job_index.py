"""The markers beside the job records: the embedded start reads only live jobs, an older store is
marked once, and jobs that ended longer than the retention ago are gone, lazily and by the sweep."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from shared.errors import NotFound
from shared.job_index import ENDED, ENDED_DAYS, INDEXED, LIVE
from shared.jobs import Job, JobStore
from shared.store import ObjectStore, open_store

pytestmark = pytest.mark.timeout(30)
DAY = 86400.0


@pytest.fixture
async def store(tmp_path: Path) -> ObjectStore:
    return await open_store(tmp_path.as_uri())


async def live(store: ObjectStore) -> set[str]:
    return {key.removeprefix(LIVE) for key in await store.list(LIVE)}


async def test_a_job_is_marked_live_until_it_ends_and_unfinished_reads_only_those(store: ObjectStore) -> None:
    jobs = JobStore(store)
    running = await jobs.save(Job(kind="ingest", state="running"))
    queued = await jobs.save(Job(kind="train"))
    ended = await jobs.save(Job(kind="ingest", state="running"))
    assert await live(store) == {running.job_id, queued.job_id, ended.job_id}
    ended.state = "succeeded"
    await jobs.save(ended)
    assert await live(store) == {running.job_id, queued.job_id}
    day = f"{ended.finished_at:%Y%m%d}"
    assert await store.list(f"{ENDED}{day}/") == [f"{ENDED}{day}/{ended.job_id}"]
    assert await store.list(ENDED_DAYS) == [f"{ENDED_DAYS}{day}"]
    await jobs.delete(queued.job_id)
    assert await live(store) == {running.job_id}
    assert [j.job_id for j in await jobs.unfinished()] == [running.job_id]


async def test_a_lost_upload_stays_marked_until_it_resumes_and_ends(store: ObjectStore) -> None:
    jobs = JobStore(store)
    upload = await jobs.save(Job(kind="ingest", state="running"))
    upload.updated_at -= dt.timedelta(seconds=120)
    await store.put(f"jobs/{upload.job_id}.json", upload.model_dump_json().encode())
    lost = await jobs.load(upload.job_id, stale_after_s=60)
    assert lost.resumable and await live(store) == {upload.job_id}, "its service may still resume it"
    assert await jobs.unfinished() == [], "final, as before"
    lost.resume("delivered again")
    await jobs.save(lost)
    assert [j.job_id for j in await jobs.unfinished()] == [upload.job_id]
    lost.state = "succeeded"
    await jobs.save(lost)
    assert await live(store) == set()


async def test_markers_left_by_a_write_that_stopped_half_way_are_dropped(store: ObjectStore) -> None:
    jobs = JobStore(store)
    await jobs.unfinished()  # a new store: marked complete
    ended = await jobs.save(Job(kind="ingest", state="running"))
    ended.state = "succeeded"
    await store.put(f"jobs/{ended.job_id}.json", ended.model_dump_json().encode())  # stopped before unmarking
    await store.put(f"{LIVE}0123456789abcdef0123456789abcdef", b'{"marked_at": "2026-01-01T00:00:00+00:00"}')
    await store.put(f"{LIVE}fedcba9876543210fedcba9876543210", b'{"marked_at": "2999-01-01T00:00:00+00:00"}')
    assert await jobs.unfinished() == []
    assert await live(store) == {"fedcba9876543210fedcba9876543210"}, "a record may still be on its way"


async def test_a_store_written_before_the_markers_is_marked_once(store: ObjectStore) -> None:
    running, done = Job(kind="train", state="running"), Job(kind="ingest", state="succeeded")
    done.finished_at = done.updated_at
    for job in (running, done):  # as an earlier release left them: records only
        await store.put(f"jobs/{job.job_id}.json", job.model_dump_json().encode())
    jobs = JobStore(store)
    assert [j.job_id for j in await jobs.unfinished()] == [running.job_id]
    assert await store.exists(INDEXED) and await live(store) == {running.job_id}
    assert await store.list(f"{ENDED}{done.finished_at:%Y%m%d}/") != []
    unmarked = Job(kind="train", state="running")
    await store.put(f"jobs/{unmarked.job_id}.json", b"{}")  # never read again: the markers are complete
    assert [j.job_id for j in await jobs.unfinished()] == [running.job_id]


async def test_a_job_that_ended_longer_than_the_retention_ago_is_gone(store: ObjectStore) -> None:
    writer, gateway = JobStore(store), JobStore(store, retention_s=7 * DAY)
    old = await writer.save(Job(kind="ingest", state="succeeded"))
    old.finished_at = old.updated_at = old.updated_at - dt.timedelta(days=8)  # ended 8 days ago
    await store.put(f"jobs/{old.job_id}.json", old.model_dump_json().encode())
    running = await writer.save(Job(kind="train", state="running", created_at=old.created_at))
    assert (await writer.get(old.job_id)).job_id == old.job_id, "without a retention: kept"
    with pytest.raises(NotFound):
        await gateway.get(old.job_id)
    assert not await store.exists(f"jobs/{old.job_id}.json"), "deleted when found"
    assert (await gateway.get(running.job_id)).state == "running", "a live job never expires"


async def test_the_sweep_deletes_whole_days_of_endings_past_the_retention(store: ObjectStore) -> None:
    writer, gateway = JobStore(store), JobStore(store, retention_s=7 * DAY)
    saved = [await writer.save(Job(kind="ingest", state="succeeded")) for _ in range(3)]
    running = await writer.save(Job(kind="ingest", state="running"))
    now = dt.datetime.now(dt.UTC)
    assert await gateway.sweep_expired(now=now) == 0
    assert await JobStore(store).sweep_expired(now=now + dt.timedelta(days=30)) == 0, "no retention: none"
    assert await gateway.sweep_expired(now=now + dt.timedelta(days=9)) == 3
    for job in saved:
        assert not await store.exists(f"jobs/{job.job_id}.json")
    assert await store.list("jobs/ended") == [], "its markers too"
    assert (await gateway.get(running.job_id)).state == "running"
