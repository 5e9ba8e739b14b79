"""A training job's computation in a process of its own, at a lower priority.

`retrain_apart` is `retrain.retrain_head` run in a child process (started fresh, niced): the
trainer's own process keeps only the job's bookkeeping (its lease, heartbeat and progress writes),
and in `make run`, where that process also serves `/predict`, TensorFlow never holds the serving
event loop's GIL nor takes its CPU first. The child opens the same store (a `file://` folder or
S3) from the trainer's settings and writes the candidate's artifact under its `work_dir`; its
progress reports and log lines come back through a pipe as they happen, then the `Outcome` or
the error (as `ErrorInfo`). A job that is cancelled, taken or out of time kills the child at once:
unlike a thread, a process stops computing when told.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, cast

from shared.messages import ErrorInfo, TrainOptions
from trainer_service.ml.artifacts import TRAINING_PROCESS
from trainer_service.ml.current_model import Log, Progress
from trainer_service.settings import TrainerSettings

if TYPE_CHECKING:
    from trainer_service.ml.retrain import Outcome

#: Seconds a stopping child has to end before it is killed.
GRACE_S = 2.0


@dataclass(frozen=True)
class _Job:
    """What the child needs to run `retrain_head`; pickled to it."""

    settings: TrainerSettings
    options: TrainOptions
    version: str


async def retrain_apart(options: TrainOptions, *, version: str, settings: TrainerSettings,
                        progress: Progress, log: Log) -> Outcome:
    """`retrain_head(store, registry, options, ...)` on the store `settings` names, run in a child
    process; returns its Outcome, raises its error (a `DermaScanError` of the same status and
    code) or `Stopped` when `progress.should_stop()` stopped it. Cancelling this coroutine kills
    the child."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no copy of our threads or loop
    ours, theirs = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(theirs, _Job(settings, options, version)),
                            name=f"{TRAINING_PROCESS}{version}", daemon=True)
    child.start()
    theirs.close()
    try:
        while True:
            try:
                kind, payload = await asyncio.to_thread(ours.recv)
            except EOFError:
                raise RuntimeError(f"the training process ended without a result "
                                   f"(exit code {await asyncio.to_thread(_reap, child)})") from None
            if kind == "progress":
                progress.update(**payload)  # raises Stopped when the job should stop
            elif kind == "log":
                log(payload)
            elif kind == "done":
                return cast("Outcome", payload)
            else:  # "error": (ErrorInfo, the child's traceback)
                info, trace = payload
                raise info.to_exception() from _ChildTraceback(trace)
    finally:
        if child.is_alive():  # stopped, cancelled or failed here: its work is of no use any more
            child.kill()
        await asyncio.to_thread(_reap, child)
        ours.close()


class _ChildTraceback(Exception):
    """The training process's traceback, chained to the error it raised (for the logs)."""


def _reap(child: multiprocessing.process.BaseProcess) -> int | None:
    child.join(GRACE_S)
    if child.is_alive():
        child.kill()
        child.join()
    return child.exitcode


def _child(pipe: Connection, job: _Job) -> None:
    """The child's main: run the job, send its progress, log lines and result up `pipe`."""
    import threading

    os.nice(job.settings.train_niceness)  # serving's CPU first (see the setting)
    lock = threading.Lock()  # progress comes from training threads too

    def send(kind: str, payload: Any) -> None:
        with lock:
            pipe.send((kind, payload))

    class Reporting(Progress):
        def update(self, **values: Any) -> None:
            super().update(**values)
            send("progress", values)

    try:
        outcome = asyncio.run(_run(job, Reporting(), lambda line: send("log", line)))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the trainer, which decides
        send("error", (ErrorInfo.from_exception(exc), traceback.format_exc()))
    else:
        send("done", outcome)
    finally:
        with contextlib.suppress(OSError):
            pipe.close()


async def _run(job: _Job, progress: Progress, log: Log) -> Any:
    from shared.classifier import configure_threads
    from shared.registry import ModelRegistry
    from shared.store import open_store_for
    from trainer_service.ml.retrain import retrain_head

    configure_threads(job.settings.intra_op_threads, 1)
    store = await open_store_for(job.settings)
    try:
        return await retrain_head(store, ModelRegistry(store), job.options, version=job.version,
                                  settings=job.settings, progress=progress, log=log)
    finally:
        await store.close()
