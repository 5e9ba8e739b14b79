"""How many threads a model call gets: every CPU for a lone image, the stream's share under load,
and one thread for a lone image too where every CPU has proved slower (a busy host).

The choice is made per batch from what the batch starts into (`Backlog`, counted by the
micro-batcher) and from the times of earlier lone calls, fed in here as numbers; the real speed is
measured by bench/serve.py, not here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference_worker.batching import Backlog
from inference_worker.threads import ThreadChooser, ThreadPlan
from shared.classifier import Classifier, probe_images

pytestmark = pytest.mark.timeout(60)
IDLE = Backlog(waiting=0, running=0)
#: A 4-CPU worker with the default 2 streams: each call's share is 2 threads.
PLAN = ThreadPlan.for_host(intra_op_threads=2, cpus=4)


def test_a_lone_image_gets_every_cpu() -> None:
    assert PLAN.threads_for(1, IDLE) == 4


def test_an_image_beside_a_running_batch_gets_its_streams_share() -> None:
    assert PLAN.threads_for(1, Backlog(waiting=0, running=1)) == 2


def test_an_image_with_requests_waiting_behind_it_gets_its_streams_share() -> None:
    assert PLAN.threads_for(1, Backlog(waiting=1, running=0)) == 2  # queued or still being decoded


def test_a_batch_of_several_images_gets_its_streams_share_even_alone() -> None:
    assert PLAN.threads_for(2, IDLE) == 2  # they came together: that is load


def test_a_worker_whose_calls_have_every_cpu_already_runs_all_calls_alike() -> None:
    one_stream = ThreadPlan.for_host(intra_op_threads=4, cpus=4)
    assert not one_stream.adapts
    assert {one_stream.threads_for(1, IDLE), one_stream.threads_for(8, Backlog(9, 1))} == {4}
    assert ThreadPlan.for_host(intra_op_threads=8, cpus=4).lone == 8  # never fewer than a share


def test_a_lone_call_and_a_shared_call_answer_the_same(tiny_model_dir: Path) -> None:
    classifier = Classifier.load(tiny_model_dir, threads=1)
    assert classifier.engine == "litert"
    images = probe_images(classifier.input_size, 3)
    lone = classifier.predict_scores(images, threads=2)
    shared = classifier.predict_scores(images)
    np.testing.assert_allclose(lone, shared, rtol=1e-5, atol=1e-6)


def lone_calls(chooser: ThreadChooser, seconds: dict[int, float], calls: int,
               cold: dict[int, float] | None = None) -> list[int]:
    """The thread counts `calls` lone images get, each call taking `seconds[threads]`, or
    `cold[threads]` when the call before it ran at the other count."""
    chosen: list[int] = []
    for _ in range(calls):
        threads = chooser.threads_for(1, IDLE)
        took = cold if cold is not None and chosen[-1:] != [threads] else seconds
        chooser.record(1, IDLE, threads, took[threads])
        chosen.append(threads)
    return chosen


def test_lone_images_try_every_cpu_first_then_one_thread_then_keep_the_faster() -> None:
    chooser = ThreadChooser(PLAN, probe_every=5, probe_calls=2)
    # two calls a count, the first cold, before the counts are compared; then the other count is
    # tried twice in a row at every 5th and 6th lone call
    assert lone_calls(chooser, {4: 0.006, 2: 0.009}, 12) == [4, 4, 2, 2, 2, 2, 4, 4, 4, 2, 2, 4]


def test_lone_images_leave_every_cpu_when_it_turns_slower_and_come_back() -> None:
    chooser = ThreadChooser(PLAN, probe_every=4, probe_calls=2, weight=1.0)
    lone_calls(chooser, {4: 0.006, 2: 0.009}, 2)
    # lone calls 3 to 10 on a busy host: one thread timed, then every CPU timed anew and left
    assert lone_calls(chooser, {4: 0.019, 2: 0.015}, 8) == [2, 2, 2, 4, 4, 4, 4, 2]
    # lone calls 11 to 18, quiet again: the probe at the 12th and 13th finds every CPU faster
    assert lone_calls(chooser, {4: 0.006, 2: 0.009}, 8) == [2, 4, 4, 4, 4, 2, 2, 4]


def test_a_cold_first_call_after_the_other_count_does_not_count_against_it() -> None:
    # every CPU is faster warm (2.9 ms against 4.7) but slower on its first call after one
    # thread (5.3 ms): timing that call made a quiet worker serve lone images on one thread
    chooser = ThreadChooser(PLAN, probe_every=16, probe_calls=2)
    chosen = lone_calls(chooser, {4: 0.0029, 2: 0.0047}, 200, cold={4: 0.0053, 2: 0.0047})
    assert chosen.count(4) > 0.85 * len(chosen)


def test_a_count_slow_at_start_up_gets_the_lone_images_back_within_two_probes() -> None:
    chooser = ThreadChooser(PLAN, probe_every=16, probe_calls=2)
    lone_calls(chooser, {4: 0.0085, 2: 0.0047}, 4)  # every CPU timed while the host was busy
    chosen = lone_calls(chooser, {4: 0.0025, 2: 0.0047}, 3 * 16)  # quiet now
    assert chosen[2 * 16:].count(4) == 14  # the third 16: every CPU, but for a probe of one thread


def test_probes_need_a_warm_call_and_a_cold_one() -> None:
    with pytest.raises(ValueError, match="probe_calls"):
        ThreadChooser(PLAN, probe_calls=1)


def test_calls_under_load_get_the_share_and_teach_the_lone_choice_nothing() -> None:
    chooser = ThreadChooser(PLAN)
    busy = Backlog(waiting=3, running=1)
    assert chooser.threads_for(8, busy) == 2
    chooser.record(8, busy, 2, 0.001)  # fast, but not a lone call: not compared
    assert lone_calls(chooser, {4: 0.006, 2: 0.009}, 5) == [4, 4, 2, 2, 4]


def test_the_chooser_of_a_worker_whose_calls_have_every_cpu_never_moves() -> None:
    chooser = ThreadChooser(ThreadPlan.for_host(intra_op_threads=4, cpus=4))
    assert set(lone_calls(chooser, {4: 0.006}, 20)) == {4}
