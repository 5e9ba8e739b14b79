"""A training job is its trainer's only while its writes succeed: an operator's cancel
(`DELETE /jobs/{id}`), the time limit, or an observer's `worker_lost` verdict ends it, frees the
training claim at once, and nothing of it is promoted afterwards. Each on the in-memory bus (the
embedded mode) and on real RabbitMQ, through the gateway as an operator uses it."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from embedded.system import build_system
from gateway.settings import GatewaySettings
from shared.bus import connect_bus
from shared.bus.topology import Topology, declare
from shared.errors import Unprocessable
from shared.jobs import Job, JobStore
from shared.registry import ModelRegistry
from shared.store import ObjectStore, open_store
from tests.conftest import FIXTURES, TEST_SPLIT_SECRET
from tests.support.http import wait_job
from tests.support.tokens import OPERATOR, OPERATOR_TOKEN
from trainer_service.commands.importer import import_dataset
from trainer_service.ml.retrain import Outcome, Progress, retrain_head
from trainer_service.service import consumer
from trainer_service.service.lease import JobLease
from trainer_service.settings import TrainerSettings

pytestmark = pytest.mark.timeout(180)  # training runs in this process, beside two other test processes
Client = TestClient[web.Request, web.Application]


@dataclass
class Harness:
    """A gateway (and, unless left out, a trainer) on the test's bus and store."""

    client: Client
    store: ObjectStore
    metrics: CollectorRegistry

    def ended(self, status: str) -> float:
        """How many jobs the trainer counted as ended with `status`."""
        value = self.metrics.get_sample_value("dermascan_trainer_service_jobs_total", {"status": status})
        return value or 0.0

    async def retrain(self, **options: Any) -> str:
        response = await self.client.post("/retrain", json=options, headers=OPERATOR)
        assert response.status == 202, await response.text()
        return str((await response.json())["job_id"])

    async def current(self) -> str:
        return str((await (await self.client.get("/models")).json())["current"])


Start = Callable[..., Awaitable[Harness]]


@pytest.fixture(params=["memory", "rabbitmq"])
async def start(request: pytest.FixtureRequest, tmp_path: Path, tiny_model_dir: Path,
                unique: str) -> AsyncIterator[Start]:
    """Start a gateway and a trainer (`with_trainer=False`: the gateway alone) on one bus, the
    in-memory one or real RabbitMQ with this test's own queue names, and one store; a later call
    adds a trainer (`trainer_only=True`) beside them. `gateway` and `trainer` override settings."""
    broker = "memory://" if request.param == "memory" else request.getfixturevalue("rabbit_url")
    names = {} if request.param == "memory" else {
        **{f"{name}_queue": f"{unique}.{name}" for name in ("predict", "ingest", "train")},
        **{f"{name}_exchange": f"{unique}.{name}" for name in ("status", "models")}}
    common: dict[str, Any] = {"broker_url": broker, "store_url": tmp_path.as_uri(),
                              "bundled_model_dir": tiny_model_dir, **names}
    bus = await connect_bus(broker)
    store = await open_store(tmp_path.as_uri())
    cleanups: list[Callable[[], Awaitable[None]]] = [bus.close, store.close]
    client: Client | None = None

    async def make(*, with_trainer: bool = True, trainer_only: bool = False,
                   gateway: dict[str, Any] | None = None, trainer: dict[str, Any] | None = None) -> Harness:
        nonlocal client
        settings = None if trainer_only else GatewaySettings(**common, operator_token=OPERATOR_TOKEN,
                                                             **(gateway or {}))
        if settings is not None:  # as the gateway does once it reaches the broker, before any request
            await declare(bus, *Topology.of(settings).queues)
        system = build_system(
            bus, store, gateway=settings,
            trainer=TrainerSettings(**{**common, "metrics_port": 0, "work_dir": tmp_path / "trainer",
                                       "progress_interval_s": 0.1,
                                       "train_in_subprocess": False,  # retrain_head is replaced here
                                       **(trainer or {})})
            if with_trainer or trainer_only else None)
        await system.start()
        cleanups.append(system.stop)
        if system.app is not None:
            client = Client(TestServer(system.app))
            await client.start_server()
            cleanups.append(client.close)
        assert client is not None, "start the gateway first"
        return Harness(client, store, system.registry)

    yield make
    for cleanup in reversed(cleanups):
        await cleanup()


class Hang:
    """A retrain whose first `hanging` calls compute in a thread until `release` (a step that
    never ends, which nobody can kill); later calls fail at once, so a following job shows the
    trainer is free."""

    def __init__(self) -> None:
        self.release, self.thread_ended = threading.Event(), threading.Event()
        self.started = asyncio.Event()
        self.calls, self.hanging = 0, 1

    async def __call__(self, *args: Any, progress: Progress, **kwargs: Any) -> Outcome:
        self.calls += 1
        if self.calls > self.hanging:
            raise Unprocessable("nothing to train on", code="no_training_data")
        progress.update(phase="training", epoch=1, epochs=100)
        self.started.set()
        await asyncio.to_thread(self._compute)
        raise AssertionError("a stopped training went on")

    def _compute(self) -> None:
        self.release.wait(30)
        self.thread_ended.set()


@pytest.fixture
def hang(monkeypatch: pytest.MonkeyPatch) -> Hang:
    hung = Hang()
    monkeypatch.setattr(consumer, "retrain_head", hung)
    return hung


async def test_cancel_stops_a_running_training_frees_the_claim_and_the_trainer_at_once(
        start: Start, hang: Hang) -> None:
    system = await start()
    job_id = await system.retrain(epochs=3)
    await asyncio.wait_for(hang.started.wait(), 20)
    try:
        assert (await system.client.delete(f"/jobs/{job_id}")).status == 401  # operators only
        started = time.monotonic()
        response = await system.client.delete(f"/jobs/{job_id}", headers=OPERATOR)
        assert response.status == 200, await response.text()
        cancelled = await response.json()
        assert cancelled["state"] == "cancelled" and cancelled["error"]["code"] == "cancelled"
        assert cancelled["finished_at"] and "cancelled by operator" in cancelled["error"]["message"]

        # the claim is free at once, and the trainer (prefetch 1) gets to the next job
        following = await wait_job(system.client, await system.retrain(epochs=3), timeout=60)
        assert following["state"] == "failed" and following["error"]["code"] == "no_training_data"
        assert time.monotonic() - started < 10
        assert system.ended("cancelled") == 1
        assert not hang.thread_ended.is_set(), "the thread of the stopped step runs to its end"

        job = await (await system.client.get(f"/jobs/{job_id}")).json()
        assert job["state"] == "cancelled" and job["result"] is None, "the trainer wrote nothing after"
        again = await system.client.delete(f"/jobs/{job_id}", headers=OPERATOR)
        assert again.status == 409 and (await again.json())["error"]["code"] == "job_over"
        events = (await (await system.client.get("/audit", headers=OPERATOR)).json())["events"]
        assert [(e["action"], e["target"], e["status"]) for e in events if e["action"] == "cancel"] == [
            ("cancel", job_id, 409), ("cancel", job_id, 200)]
        assert await system.current() == "tiny-v1"
    finally:
        hang.release.set()


async def test_a_queued_job_cancelled_is_never_run(start: Start, hang: Hang) -> None:
    hang.hanging = 0
    gateway = await start(with_trainer=False)  # no trainer yet: the job waits in the queue
    job_id = await gateway.retrain()
    response = await gateway.client.delete(f"/jobs/{job_id}", headers=OPERATOR)
    assert response.status == 200 and (await response.json())["state"] == "cancelled"
    another = await gateway.retrain()  # the claim is free at once
    trainer = await start(trainer_only=True)  # a trainer comes and takes both messages in order
    assert (await wait_job(gateway.client, another, timeout=60))["state"] == "failed"
    assert hang.calls == 1, "the cancelled job was acknowledged without training"
    assert trainer.ended("failed") == 1 and trainer.ended("cancelled") == 0
    assert (await (await gateway.client.get(f"/jobs/{job_id}")).json())["state"] == "cancelled"


async def test_a_job_past_its_time_limit_is_stopped_and_frees_the_claim(start: Start, hang: Hang) -> None:
    system = await start(trainer={"training_time_limit_s": 0.5})
    started = time.monotonic()
    try:
        job = await wait_job(system.client, await system.retrain(), timeout=60)
        assert job["state"] == "failed" and job["error"]["code"] == "time_limit_exceeded", job
        assert "0.5 s" in job["error"]["message"] and time.monotonic() - started < 10
        following = await wait_job(system.client, await system.retrain(), timeout=60)
        assert following["error"]["code"] == "no_training_data", "the claim and the trainer were free"
        assert not hang.thread_ended.is_set()
    finally:
        hang.release.set()


@pytest.mark.parametrize("lost_while", ["training", "publishing"])
async def test_a_worker_lost_verdict_racing_a_finishing_trainer_never_ends_promoted(
        start: Start, monkeypatch: pytest.MonkeyPatch, lost_while: str) -> None:
    """The race of issue 23, replayed: the trainer goes quiet (its heartbeat is slow here), an
    observer (`GET /jobs/{id}`) reports it `worker_lost`, then the trainer finishes a candidate
    the gate passes. It must not publish (lost while training) or promote (lost while
    publishing), nor overwrite the verdict."""
    paused, resume = asyncio.Event(), asyncio.Event()

    async def pause() -> None:
        paused.set()
        await resume.wait()

    real_retrain = retrain_head

    async def passing(*args: Any, **kwargs: Any) -> Outcome:
        if lost_while == "training":
            await pause()
        outcome = await real_retrain(*args, **kwargs)
        # the gate's judgement is tested elsewhere: here the candidate is one it would promote
        passed = outcome.gate.model_copy(update={"passed": True, "reasons": []})
        return dataclasses.replace(outcome, gate=passed)

    monkeypatch.setattr(consumer, "retrain_head", passing)
    real_publish = ModelRegistry.publish

    async def publish(self: ModelRegistry, *args: Any, **kwargs: Any) -> None:
        await real_publish(self, *args, **kwargs)
        if lost_while == "publishing" and system is not None:  # a candidate, not the bundled model
            await pause()

    monkeypatch.setattr(ModelRegistry, "publish", publish)
    system: Harness | None = None
    system = await start(gateway={"job_stale_s": 0.3}, trainer={"progress_interval_s": 30})
    await import_dataset(system.store, FIXTURES / "ham10000",
                         split_secret=SecretStr(TEST_SPLIT_SECRET), log=lambda _: None)
    job_id = await system.retrain(epochs=2, promote=True)
    await asyncio.wait_for(paused.wait(), 45)
    await asyncio.sleep(0.5)  # silent past DERMASCAN_JOB_STALE_S
    verdict = await (await system.client.get(f"/jobs/{job_id}")).json()
    assert verdict["state"] == "failed" and verdict["error"]["code"] == "worker_lost"
    resume.set()
    for _ in range(1200):  # the trainer finds out at its next write, and stops (its epochs run first)
        if system.ended("failed"):
            break
        await asyncio.sleep(0.05)
    assert system.ended("failed") == 1 and system.ended("succeeded") == 0
    job = await (await system.client.get(f"/jobs/{job_id}")).json()
    assert (job["state"], job["error"]["code"], job["result"]) == ("failed", "worker_lost", None)
    assert await system.current() == "tiny-v1", "the candidate of a lost job is never promoted"
    versions = [v["version"] for v in (await (await system.client.get("/models")).json())["versions"]]
    assert len(versions) == (1 if lost_while == "training" else 2), versions


async def test_a_job_ending_while_its_heartbeat_writes_is_recorded_as_ended(tmp_path: Path) -> None:
    """The heartbeat's write is in flight (slow: a busy machine) when the training ends: the end
    waits for that write instead of cancelling it halfway (its thread would still write, leaving
    the lease the record's last version but one, and the job's end unrecorded, then `worker_lost`)."""
    store = await open_store(tmp_path.as_uri())
    jobs = JobStore(store)
    job = Job(kind="train")
    await jobs.save(job)
    writing, real_put_if = threading.Event(), store._put_if  # type: ignore[attr-defined]

    def slow_put_if(*args: Any) -> str:  # in the store's thread: written, then slow to return
        writing.set()
        version: str = real_put_if(*args)
        time.sleep(0.3)
        return version

    store._put_if = slow_put_if  # type: ignore[attr-defined]
    lease = JobLease(jobs, job, Progress(), every_s=0.01, limit_s=60)
    async with lease:
        writing.clear()
        await asyncio.to_thread(writing.wait, 5)  # a heartbeat write has begun
        assert await lease.finish("succeeded", None, phase="done")
    assert (await jobs.get(job.job_id)).state == "succeeded"
    await store.close()
