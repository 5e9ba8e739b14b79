"""The gateway's retention sweep: shortly after the start and then on its period it deletes the
jobs and audit events past their retention, and a sweep the store fails is retried, not fatal."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import AuditEvent, AuditLog
from gateway.retention import sweep_forever
from shared.jobs import Job, JobStore
from shared.store import ObjectStore, StoreUnavailable, open_store

pytestmark = pytest.mark.timeout(30)


class FailingFirst:
    """A store whose first listing fails (the store down at the first sweep)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store, self.failed = store, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def list(self, prefix: str = "") -> list[str]:
        if not self.failed:
            self.failed = True
            raise StoreUnavailable("the store is down")
        return await self.store.list(prefix)


async def test_the_sweep_deletes_what_is_past_its_retention_and_rides_out_a_failure(tmp_path: Path) -> None:
    store = await open_store(tmp_path.as_uri())
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    job = await JobStore(store).save(Job(kind="ingest", state="succeeded", finished_at=long_ago))
    await AuditLog(store).record(AuditEvent(at=long_ago, action="promote", actor="ops", role="operator",
                                            status=200, outcome="ok"))
    flaky: Any = FailingFirst(store)
    jobs, audit = JobStore(flaky, retention_s=30 * 86400), AuditLog(flaky, retention_s=30 * 86400)
    sweeping = asyncio.create_task(sweep_forever(jobs, audit, first_after_s=0, every_s=0.05))
    try:
        for _ in range(100):
            if not await store.list("audit/events/") and not await store.exists(f"jobs/{job.job_id}.json"):
                break
            await asyncio.sleep(0.05)
    finally:
        sweeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeping
    assert flaky.failed
    assert await store.list("audit/events/") == [] and not await store.exists(f"jobs/{job.job_id}.json")
