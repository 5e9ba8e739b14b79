"""Markers beside the job records that say which jobs are live and which ended when, so that
neither the embedded start nor the expiry sweep reads every job ever written.

    jobs/live/<job_id>                a job not final (or lost and resumable): `JobStore.unfinished`
    jobs/ended/<YYYYMMDD>/<job_id>    a job that became final that day (UTC): the expiry sweep
    jobs/ended-days/<YYYYMMDD>        the days that have `ended` markers
    jobs/indexed.json                 the markers cover every record (an older store marked once)

`shared.jobs.JobStore` writes them around each record write: a live marker before the record's
first write (so a live record is never unmarked), the others after. A marker left by a write
that stopped half-way names a record that is gone or final; its readers drop it.
"""

from __future__ import annotations

import datetime as dt
import json

from shared.errors import NotFound
from shared.manifest import utcnow
from shared.store import ObjectStore

LIVE = "jobs/live/"
ENDED = "jobs/ended/"
ENDED_DAYS = "jobs/ended-days/"
INDEXED = "jobs/indexed.json"


def _day(at: dt.datetime) -> str:
    return f"{at.astimezone(dt.UTC):%Y%m%d}"


def day_end(day: str) -> dt.datetime:
    """The first moment after `day` (`YYYYMMDD`, UTC)."""
    return dt.datetime.strptime(day, "%Y%m%d").replace(tzinfo=dt.UTC) + dt.timedelta(days=1)


class JobIndex:
    """The markers of one store. Loop-only."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._days: set[str] = set()  # `ended-days` markers this process wrote

    async def mark_live(self, job_id: str) -> None:
        """Mark `job_id` live; the marker says when, so a marker whose record never came can be
        told from one whose record is being written."""
        await self.store.put(f"{LIVE}{job_id}", json.dumps({"marked_at": utcnow().isoformat()}).encode())

    async def unmark_live(self, job_id: str) -> None:
        await self.store.delete(f"{LIVE}{job_id}")

    async def live(self) -> list[str]:
        """The ids marked live (one listing of `jobs/live/`, as long as the live jobs)."""
        return [key.removeprefix(LIVE) for key in await self.store.list(LIVE)]

    async def marked_at(self, job_id: str) -> dt.datetime | None:
        """When `job_id` was marked live (None: not marked, or unreadable)."""
        try:
            return dt.datetime.fromisoformat(json.loads(await self.store.get(f"{LIVE}{job_id}"))["marked_at"])
        except (NotFound, ValueError, KeyError, TypeError):
            return None

    async def mark_ended(self, job_id: str, at: dt.datetime) -> None:
        """Note that `job_id` became final at `at`."""
        day = _day(at)
        if day not in self._days:  # once per process and day; a put is idempotent
            await self.store.put(f"{ENDED_DAYS}{day}", b"")
            self._days = {d for d in self._days if d >= _day(utcnow())} | {day}
        await self.store.put(f"{ENDED}{day}/{job_id}", b"")

    async def ended_days(self) -> list[str]:
        """The days with jobs that ended, oldest first (as many as the retention keeps)."""
        return sorted(key.removeprefix(ENDED_DAYS) for key in await self.store.list(ENDED_DAYS))

    async def ended_on(self, day: str) -> list[str]:
        """The ids of the jobs that ended on `day`."""
        prefix = f"{ENDED}{day}/"
        return [key.removeprefix(prefix) for key in await self.store.list(prefix)]

    async def unmark_ended(self, day: str, job_id: str) -> None:
        await self.store.delete(f"{ENDED}{day}/{job_id}")

    async def drop_day(self, day: str) -> None:
        self._days.discard(day)
        await self.store.delete(f"{ENDED_DAYS}{day}")

    async def complete(self) -> bool:
        """Whether the markers cover every record (`mark_complete` was called on this store)."""
        return await self.store.exists(INDEXED)

    async def mark_complete(self) -> None:
        await self.store.put(INDEXED, json.dumps({"since": utcnow().isoformat()}).encode(),
                             content_type="application/json")
