"""The gateway's sweep of what its retention settings forget: job records
(`DERMASCAN_JOB_RETENTION_S`) and audit events (`DERMASCAN_AUDIT_RETENTION_S`), shortly after it
starts and then every hour. Each sweep deletes at most a week of days (a backlog goes at the next
sweeps) and lists only the markers of those days; several gateways sweeping at once delete the
same objects, which is harmless."""

from __future__ import annotations

import asyncio
import logging

from gateway.audit import AuditLog
from shared.jobs import JobStore

log = logging.getLogger(__name__)
SWEEP_EVERY_S = 3600.0
FIRST_SWEEP_AFTER_S = 30.0  # not while a starting system is busy


async def sweep_once(jobs: JobStore, audit: AuditLog) -> tuple[int, int]:
    """Delete expired job records and audit events; return how many of each. Raises what the
    store raises."""
    return await jobs.sweep_expired(), await audit.sweep_expired()


async def sweep_forever(jobs: JobStore, audit: AuditLog, *, first_after_s: float = FIRST_SWEEP_AFTER_S,
                        every_s: float = SWEEP_EVERY_S) -> None:
    """Sweep after `first_after_s`, then every `every_s`, until cancelled. A sweep that fails (the
    store is down) is logged and the next one tries again."""
    await asyncio.sleep(first_after_s)
    while True:
        try:
            records, events = await sweep_once(jobs, audit)
            if records or events:
                log.info("retention: deleted %d job records and %d audit events", records, events)
        except Exception:
            log.exception("retention sweep failed; the next one tries again in %.0f s", every_s)
        await asyncio.sleep(every_s)
