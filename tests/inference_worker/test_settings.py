"""How a worker sizes its TensorFlow threads: CPUs shared between its model streams."""

from __future__ import annotations

import pytest

from inference_worker.settings import WorkerSettings
from shared.host import usable_cpus


def test_streams_share_the_cpus_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERMASCAN_WORKER_STREAMS", "1")
    assert WorkerSettings().intra_op_threads == usable_cpus()
    monkeypatch.setenv("DERMASCAN_WORKER_STREAMS", str(2 * usable_cpus()))
    assert WorkerSettings().intra_op_threads == 1  # never zero


def test_concurrency_given_in_code_moves_the_thread_default_too() -> None:
    settings = WorkerSettings(streams=1)  # what `--concurrency 1` builds
    assert (settings.streams, settings.intra_op_threads) == (1, usable_cpus())


def test_explicit_threads_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERMASCAN_INTRA_OP_THREADS", "3")
    assert WorkerSettings(streams=4).intra_op_threads == 3
