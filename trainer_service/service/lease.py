"""A training job as its trainer holds it: the job is the trainer's while its writes succeed.

Every write is conditional (`JobStore.save`), so the first one that finds the record changed
(an operator cancelled the job, an observer reported it `worker_lost`) tells the trainer the job
is no longer its own: it stops and writes nothing more. A heartbeat writes the progress every
few seconds, which is also how a cancel reaches a running training within that interval, and
keeps the record fresh through publishing and promotion (an observer reports a job lost only
after `DERMASCAN_JOB_STALE_S` of silence). Before a step that must not happen for a job that is
no longer its own (publishing, promoting) the trainer writes the phase it enters (`phase`): a
write that succeeds proves the record is still the one it wrote last.

The time limit and a loss stop the training by cancelling the task that awaits it. Its steps
run in threads (`asyncio.to_thread`), which cannot be killed: a thread already computing runs
to the end of its step, then its result is dropped; `should_stop` (thread-safe) lets the steps
check between epochs or batches and end sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from shared.errors import DermaScanError
from shared.jobs import Job, JobChanged, JobState, JobStore
from shared.messages import ErrorInfo
from trainer_service.ml.retrain import Progress

log = logging.getLogger(__name__)
T = TypeVar("T")
TIME_LIMIT = "time_limit_exceeded"


class JobTaken(Exception):
    """The job's record changed under its trainer (cancelled, reported lost): it is no longer its
    own. `current` is the record now (None: gone)."""

    def __init__(self, job_id: str, current: Job | None) -> None:
        state = "gone" if current is None else current.state
        super().__init__(f"training job {job_id} is no longer this trainer's: it is {state}")
        self.current = current


class TimeLimitExceeded(Exception):
    """The job ran past its time limit (`DERMASCAN_TRAINING_TIME_LIMIT_S`)."""


class JobLease:
    """Holds `job` for its trainer while it runs: `async with` writes it running and starts the
    heartbeat (every `every_s`); leaving stops the heartbeat. Loop-only, except `should_stop`."""

    def __init__(self, jobs: JobStore, job: Job, progress: Progress, *, every_s: float,
                 limit_s: float) -> None:
        self.jobs, self.job, self.progress = jobs, job, progress
        self.every_s, self.limit_s = every_s, limit_s
        self.taken: Job | None = None
        self._lost = asyncio.Event()
        self._stop = threading.Event()
        self._lock = asyncio.Lock()
        self._deadline = time.monotonic() + limit_s
        self._beat: asyncio.Task[None] | None = None

    def should_stop(self) -> bool:
        """True once the job is no longer this trainer's or its time is up: a training step
        that checks it between epochs ends early. Thread-safe."""
        return self._stop.is_set()

    async def __aenter__(self) -> JobLease:
        """Write the job running and start its heartbeat; raises JobTaken (nothing started)
        when it was cancelled after its message was taken."""
        self.job.state = "running"
        self.job.note("training started")
        await self._save()
        self._deadline = time.monotonic() + self.limit_s
        self._beat = asyncio.create_task(self._heartbeat(), name=f"heartbeat of job {self.job.job_id}")
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._stop.set()  # whatever happened, nothing of this job should go on computing
        await self._stop_beat()

    async def _stop_beat(self) -> None:
        if self._beat is not None:
            async with self._lock:  # between two writes: a write cancelled after its thread wrote
                self._beat.cancel()  # would leave us the record's last version but one (JobChanged)
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat

    async def limited(self, work: Coroutine[Any, Any, T]) -> T:
        """Await `work` until it ends, the job is taken or its time limit passes; in the last two
        cases `work` is cancelled and JobTaken or TimeLimitExceeded raised. Raises what `work`
        raises."""
        task = asyncio.ensure_future(work)
        lost = asyncio.create_task(self._lost.wait())
        try:
            left = max(0.0, self._deadline - time.monotonic())
            await asyncio.wait({task, lost}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            self._stop.set()
            task.cancel()
            await asyncio.wait({task})  # a cancelled thread hand-off ends at once; its thread goes on
            if self._lost.is_set():
                raise JobTaken(self.job.job_id, self.taken)
            raise TimeLimitExceeded(f"the training ran past its time limit of {self.limit_s:g} s "
                                    "(DERMASCAN_TRAINING_TIME_LIMIT_S); the current model is unchanged")
        finally:
            lost.cancel()
            if not task.done():  # we are cancelled ourselves (the service stops)
                self._stop.set()
                task.cancel()

    async def phase(self, name: str) -> None:
        """Enter the progress phase `name` and write it: raises JobTaken, having written nothing,
        when the record is no longer the one this trainer wrote last."""
        self.progress.update(phase=name)
        self.job.progress = dict(self.progress.values)
        await self._save()

    async def finish(self, state: JobState, error: ErrorInfo | None, *, phase: str | None = None) -> bool:
        """Stop the heartbeat and write the job's final `state` with the progress so far, in
        `phase` when given (its claim is then free). False when the job was no longer this
        trainer's: nothing is written, the record that took it stands."""
        await self._stop_beat()
        if phase is not None:
            self.progress.update(phase=phase)
        self.job.state, self.job.error = state, error
        self.job.progress = dict(self.progress.values)
        if error is not None:
            self.job.note(f"{state}: {error.message}")
        try:
            await self._save()
        except JobTaken as taken:
            log.warning("%s; its end (%s) is not recorded", taken, state)
            return False
        return True

    async def _save(self) -> None:
        async with self._lock:  # one write at a time: each builds on the version of the last
            if self._lost.is_set():
                raise JobTaken(self.job.job_id, self.taken)
            try:
                await self.jobs.save(self.job)
            except JobChanged as changed:
                self.taken = changed.current
                if self.taken is None:  # nothing read: read it now, for the log and the caller
                    with contextlib.suppress(DermaScanError):
                        self.taken = await self.jobs.get(self.job.job_id)
                self._lost.set()
                self._stop.set()
                raise JobTaken(self.job.job_id, self.taken) from None

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            self.job.progress = dict(self.progress.values)
            try:
                await self._save()
            except JobTaken as taken:
                log.warning("%s; stopping it", taken)
                return
            except DermaScanError as exc:  # the store is away: the next beat tries again
                log.warning("progress of job %s not saved: %s", self.job.job_id, exc)
            except Exception:  # a heartbeat that died would leave the job silent, then reported lost
                log.exception("progress of job %s not saved", self.job.job_id)
