"""Threads that follow the load: how many threads each model call gets.

A worker runs `streams` batches at once, each on `intra_op_threads` threads (by default one per
stream, so that busy streams share the CPUs instead of fighting over them). A lone request would
then run on one core while the others idle: on a quiet 2-core host a MobileNetV2 image takes
~8.7 ms on one thread and ~5.7 ms on two. So a batch of one image that starts with nothing else
waiting and no other batch running (`ThreadPlan.alone`) may get every CPU (`ThreadPlan.lone`);
any other batch gets its stream's share (`ThreadPlan.shared`). The choice is made per batch from
the `Backlog` it starts into; LiteRT keeps an interpreter per thread count
(`shared.litert.LiteRTForward`), and the worker prepares both before it serves.

Only a single image goes wide: a batch of several means requests arrived together, i.e. load,
and a wide call of eight images would hold every core for ~45 ms at a lower rate than streams.

Every CPU is faster only while the CPUs are free: where other processes keep them busy (a shared
node, a CPU quota) a multi-thread call waits for its slowest thread, and on a loaded 2-core host
it measured 17-19 ms against 15 ms on one thread. So `ThreadChooser` times the lone calls it
makes at each count and gives a lone image whichever count has served lone images faster lately,
trying the other one for `probe_calls` calls in a row every `probe_every` lone calls so that it
notices when that changes. Only warm calls are timed: the first call at a count after calls at the
other finds that interpreter's packed weights out of the cache and its threads asleep (5.3 ms
against 2.9 ms warm for the base model on two threads), and timing those made every probe of the
other count look slower than it is, so a quiet 2-core worker served lone images on one thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inference_worker.batching import Backlog
from shared.classifier import Classifier
from shared.host import usable_cpus


@dataclass(frozen=True)
class ThreadPlan:
    """The thread counts of a worker's model calls."""

    #: Threads of a call that shares the CPUs with the other streams (`intra_op_threads`).
    shared: int
    #: Threads of a call that has the CPUs to itself (the CPUs this process may use).
    lone: int

    @classmethod
    def for_host(cls, intra_op_threads: int, cpus: int | None = None) -> ThreadPlan:
        """The plan of a worker whose calls share the CPUs at `intra_op_threads` each, on a host
        with `cpus` usable CPUs (None: this one's affinity mask capped by its cgroup quota)."""
        return cls(shared=intra_op_threads, lone=max(intra_op_threads, cpus or usable_cpus()))

    @property
    def adapts(self) -> bool:
        """Whether a lone call may get more threads than a shared one (else every call is alike)."""
        return self.lone > self.shared

    @staticmethod
    def alone(images: int, backlog: Backlog) -> bool:
        """Whether a batch of `images` starting into `backlog` has the worker to itself: one image,
        nothing waiting behind it, no other batch running."""
        return images == 1 and backlog.waiting == 0 and backlog.running == 0

    def threads_for(self, images: int, backlog: Backlog) -> int:
        """`lone` for a batch that is `alone`, else `shared`. Pure."""
        return self.lone if self.alone(images, backlog) else self.shared


class ThreadChooser:
    """`ThreadPlan.threads_for`, kept honest by the clock: a lone image gets the count (`lone` or
    `shared`) whose warm lone calls took less time lately (an exponential moving average of weight
    `weight`), the other count for `probe_calls` lone calls in a row every `probe_every` lone
    calls; until both have been timed, `lone` first. A lone call is warm when the lone call before
    it ran at the same count; the others are not timed. The first warm call at a count after calls
    at the other weighs at least `fresh_weight`: what was known of that count is as old as the
    last switch (a start-up spell of 8.5 ms calls on two threads otherwise kept a quiet worker on
    one thread for five probes). Calls that are not alone always get `shared`. Thread-safe."""

    def __init__(self, plan: ThreadPlan, *, probe_every: int = 16, probe_calls: int = 2,
                 weight: float = 0.2, fresh_weight: float = 0.5) -> None:
        if not 1 < probe_calls < probe_every:
            raise ValueError("probe_calls must be at least 2 (the first is cold) and below probe_every")
        self.plan = plan
        self.probe_every, self.probe_calls = probe_every, probe_calls
        self.weight, self.fresh_weight = weight, fresh_weight
        self._seconds: dict[int, float] = {}  # thread count -> moving average of a warm lone call
        self._lone_calls = 0
        self._previous: int | None = None  # the thread count of the last lone call recorded
        self._run = 0  # lone calls in a row at that count, that one included
        self._lock = threading.Lock()

    def threads_for(self, images: int, backlog: Backlog) -> int:
        """Threads for a batch of `images` that starts into `backlog`."""
        if not (self.plan.adapts and self.plan.alone(images, backlog)):
            return self.plan.shared
        with self._lock:
            self._lone_calls += 1
            untimed = [n for n in (self.plan.lone, self.plan.shared) if n not in self._seconds]
            if untimed:
                return untimed[0]
            faster, slower = sorted((self.plan.lone, self.plan.shared), key=self._seconds.__getitem__)
            return slower if self._lone_calls % self.probe_every < self.probe_calls else faster

    def record(self, images: int, backlog: Backlog, threads: int, seconds: float) -> None:
        """Account a call made as `threads_for(images, backlog)` said, which took `seconds`; only
        warm lone calls count."""
        if not (self.plan.adapts and self.plan.alone(images, backlog)):
            return
        with self._lock:
            self._run = self._run + 1 if threads == self._previous else 1
            self._previous = threads
            if self._run == 1:  # cold
                return
            weight = self.weight if self._run > 2 else max(self.weight, self.fresh_weight)
            before = self._seconds.get(threads)
            self._seconds[threads] = seconds if before is None else before + weight * (seconds - before)

    def run_batch(self, classifier: Classifier, images: Sequence[np.ndarray], backlog: Backlog) -> np.ndarray:
        """`classifier.predict_scores` of `images` on the threads chosen for them, timed: the
        worker's micro-batcher's `run` (in its executor)."""
        threads = self.threads_for(len(images), backlog)
        started = time.perf_counter()
        scores = classifier.predict_scores(np.stack(images), threads=threads)
        self.record(len(images), backlog, threads, time.perf_counter() - started)
        return scores
