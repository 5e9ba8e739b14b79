"""A training job computed in a child process (`trainer_service.service.apart`), as the trainer runs every
job by default: the candidate, its progress and its log lines come back as if computed here; its
errors come back with their codes; a job stopped mid-way kills the child at once."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from shared.messages import TrainOptions
from shared.registry import ModelRegistry
from shared.store import open_store
from tests.conftest import FIXTURES, TEST_SPLIT_SECRET
from trainer_service.commands.importer import import_dataset
from trainer_service.ml.current_model import Progress
from trainer_service.service.apart import retrain_apart
from trainer_service.settings import TrainerSettings

pytestmark = pytest.mark.timeout(300)


async def trainer_settings(tmp_path: Path, tiny_model_dir: Path, *, catalog: bool) -> TrainerSettings:
    """A store holding the tiny model (and, with `catalog`, the HAM10000 fixtures), and the
    settings of a trainer on it."""
    store = await open_store((tmp_path / "store").as_uri())
    try:
        await ModelRegistry(store).bootstrap(tiny_model_dir)
        if catalog:
            await import_dataset(store, FIXTURES / "ham10000", split_secret=SecretStr(TEST_SPLIT_SECRET),
                                 log=lambda _: None)
    finally:
        await store.close()
    return TrainerSettings(store_url=(tmp_path / "store").as_uri(), work_dir=tmp_path / "work",
                           bundled_model_dir=tiny_model_dir, metrics_port=0,
                           split_secret=SecretStr(TEST_SPLIT_SECRET))


def training_children() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name.startswith("training ")]


async def test_a_retrain_in_a_child_process_returns_its_candidate_progress_and_log(
        tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = await trainer_settings(tmp_path, tiny_model_dir, catalog=True)
    progress, lines = Progress(), list[str]()
    outcome = await retrain_apart(TrainOptions(epochs=2), version="tiny-v2", settings=settings,
                                  progress=progress, log=lines.append)
    assert outcome.manifest.version == "tiny-v2" and outcome.manifest.parent_version == "tiny-v1"
    assert (outcome.directory / "model.keras").is_file() and outcome.directory.is_relative_to(tmp_path)
    assert outcome.gate.sets and outcome.evidence is not None
    litert = outcome.manifest.litert  # converted for the workers in the child itself
    assert litert is not None and (outcome.directory / litert.file).is_file()
    # what the child reported, the heartbeat here saw: each epoch, then the last phase
    assert [row["epoch"] for row in progress.values["history"]] == [1, 2]
    assert progress.values["phase"] == "saving"
    assert any(line.startswith("retraining the head of tiny-v1") for line in lines), lines
    assert not training_children()


async def test_an_error_in_the_child_comes_back_with_its_code(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = await trainer_settings(tmp_path, tiny_model_dir, catalog=False)
    empty = settings.model_copy(update={"store_url": (tmp_path / "nothing").as_uri()})
    with pytest.raises(Exception) as raised:
        await retrain_apart(TrainOptions(epochs=2), version="v", settings=empty, progress=Progress(),
                            log=lambda _: None)
    assert getattr(raised.value, "code", None) == "no_current_model", raised.value
    assert not training_children()


async def test_a_stopped_job_kills_its_child_at_once_and_the_child_ran_niced(
        tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = (await trainer_settings(tmp_path, tiny_model_dir, catalog=True)).model_copy(
        update={"train_niceness": 7})
    reported = asyncio.Event()

    class Watching(Progress):
        def update(self, **values: object) -> None:
            super().update(**values)
            reported.set()

    task = asyncio.create_task(retrain_apart(TrainOptions(epochs=500), version="v", settings=settings,
                                             progress=Watching(), log=lambda _: None))
    await asyncio.wait_for(reported.wait(), 120)  # the child is computing
    [child] = training_children()
    assert child.pid is not None
    assert os.getpriority(os.PRIO_PROCESS, child.pid) == os.getpriority(os.PRIO_PROCESS, 0) + 7
    task.cancel()  # what the lease does to a cancelled, lost or timed-out job
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not child.is_alive() and child.exitcode is not None and child.exitcode < 0  # killed
    assert not training_children()
