"""Retraining as a client sees it: 202 + job, 409 while busy, 422 for a fine-tune the catalog is
too small for, gate, promotion, hot reload."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from gateway.keys import BUS, SETTINGS, STORE
from shared.fine_tune_policy import FineTunePolicy
from shared.heartbeat import Heartbeat
from shared.messages import ServiceStatus
from shared.store import open_store
from shared.training_claim import TRAINING_CLAIMS
from shared.verdict import GateResult
from tests.conftest import FIXTURES, TEST_SPLIT_SECRET
from tests.gateway.conftest import Client, MakeClient
from tests.support.http import form, wait_job
from tests.support.reliability import scenario
from tests.support.tokens import OPERATOR
from trainer_service.commands.importer import import_dataset
from trainer_service.ml import retrain
from trainer_service.ml.gate import combine

pytestmark = pytest.mark.timeout(120)
#: Trainer settings under which any candidate passes the gate (margins are the trainer's policy).
LENIENT_GATE = {"max_balanced_accuracy_drop": 1.0, "max_class_recall_drop": 1.0,
                "gate_malignant_max_recall_drop": 1.0, "gate_min_class_support": 1,
                "gate_unjudged_malignant_blocks": False}


async def seed(tmp_path: Path) -> None:
    """The store of the clients `make_client` builds, with the 28 fixture images catalogued."""
    store = await open_store(tmp_path.as_uri())
    summary = await import_dataset(store, FIXTURES / "ham10000", split_secret=SecretStr(TEST_SPLIT_SECRET),
                                   log=lambda _: None)
    assert summary["stored:train"] + summary["stored:eval"] == 28
    await store.close()


async def seeded_client(make_client: MakeClient, tmp_path: Path,
                        gate: dict[str, object] | None = None) -> Client:
    await seed(tmp_path)
    return await make_client(with_jobs=True, trainer=LENIENT_GATE if gate is None else gate)


async def predicted_version(client: Client, image: bytes) -> str:
    response = await client.post("/predict", data=form(image))
    assert response.status == 200
    return str((await response.json())["model_version"])


async def test_retrain_extends_the_classes_promotes_and_workers_reload(
        make_client: MakeClient, tmp_path: Path, melanoma_jpeg: bytes) -> None:
    client = await seeded_client(make_client, tmp_path)
    assert await predicted_version(client, melanoma_jpeg) == "tiny-v1"

    response = await client.post("/retrain", json={"epochs": 20}, headers=OPERATOR)
    assert response.status == 202
    accepted = await response.json()
    assert accepted["state"] == "queued"
    busy = await client.post("/retrain", json={"epochs": 20}, headers=OPERATOR)
    assert busy.status == 409 and (await busy.json())["job_id"] == accepted["job_id"]

    job = await wait_job(client, accepted["job_id"], timeout=90)
    assert job["state"] == "succeeded", job.get("error")
    assert job["started_at"] and job["finished_at"] and any("training started" in line for line in job["log"])
    assert job["progress"]["epoch"] == 20
    version = job["result"]["version"]
    assert len(job["result"]["classes"]) == 7  # the tiny model knew 3; the data has 7

    models = await (await client.get("/models")).json()
    assert models["current"] == version and [v["version"] for v in models["versions"]][-1] == version
    for _ in range(50):  # the promotion broadcast reaches the worker, which reloads
        if await predicted_version(client, melanoma_jpeg) == version:
            break
        await asyncio.sleep(0.1)
    assert await predicted_version(client, melanoma_jpeg) == version
    classes = await (await client.get("/classes")).json()
    assert "vascular_lesion" in classes["predicted"]

    rolled = await client.post("/models/rollback", headers=OPERATOR)
    assert (await rolled.json())["current"] == "tiny-v1"
    promoted = await client.post(f"/models/{version}/promote", headers=OPERATOR)
    assert promoted.status == 200 and (await promoted.json())["current"] == version
    assert (await client.post("/models/nope/promote", headers=OPERATOR)).status == 404


async def test_a_candidate_the_gate_rejects_is_kept_and_only_a_forced_promotion_serves_it(
        make_client: MakeClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_gate = combine

    def unconvinced(*args: Any, **kwargs: Any) -> GateResult:
        """The real verdict, turned into a rejection: the gate's judgement itself is tested in
        tests/trainer_service/test_gate.py, this test is about what happens after a no."""
        verdict = real_gate(*args, **kwargs)
        return verdict.model_copy(update={"passed": False, "reasons": ["balanced accuracy fell 0.500"]})

    monkeypatch.setattr(retrain, "combine", unconvinced)
    # the gate replaced in this process: the training computed here too, not in a child process
    client = await seeded_client(make_client, tmp_path, {**LENIENT_GATE, "train_in_subprocess": False})
    accepted = await (await client.post("/retrain", json={"epochs": 2}, headers=OPERATOR)).json()
    job = await wait_job(client, accepted["job_id"], timeout=90)
    assert job["state"] == "rejected"
    assert job["error"]["code"] == "gate_rejected" and "balanced accuracy" in job["error"]["message"]
    assert job["result"]["gate"]["passed"] is False
    models = await (await client.get("/models")).json()
    assert models["current"] == "tiny-v1"  # unchanged
    version = job["result"]["version"]
    assert version in [v["version"] for v in models["versions"]]  # kept for operators

    refused = await client.post(f"/models/{version}/promote", headers=OPERATOR)
    assert refused.status == 409 and "balanced accuracy fell" in (await refused.json())["error"]["message"]
    forced = await client.post(f"/models/{version}/promote", headers=OPERATOR,
                               json={"force": True, "reason": "reviewed the per-class recall by hand"})
    assert forced.status == 200 and (await (await client.get("/models")).json())["current"] == version
    audit = (await (await client.get("/audit", headers=OPERATOR)).json())["events"]
    assert [(e["action"], e["outcome"], e["forced"]) for e in audit] == [
        ("promote", "ok", True), ("promote", "gate_rejected", False), ("retrain", "ok", False)]
    assert audit[2]["target"] == job["job_id"]
    assert audit[0]["reason"] == "reviewed the per-class recall by hand"
    # the next request is accepted: the rejected job no longer blocks retraining
    assert (await client.post("/retrain", json={"epochs": 1, "promote": False},
                              headers=OPERATOR)).status == 202


async def test_bad_training_options_are_422(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False, with_jobs=True)
    response = await client.post("/retrain", json={"epochs": 0}, headers=OPERATOR)
    assert response.status == 422
    response = await client.post("/retrain", json={"learning_rate": 1}, headers=OPERATOR)
    assert response.status == 422


@pytest.mark.parametrize("margin", ["max_balanced_accuracy_drop", "max_class_recall_drop"])
async def test_the_caller_cannot_set_the_gate_margins(make_client: MakeClient, margin: str) -> None:
    client = await make_client(with_worker=False, with_jobs=True)
    response = await client.post("/retrain", json={"epochs": 1, margin: 1.0}, headers=OPERATOR)
    assert response.status == 422
    assert margin in (await response.json())["error"]["message"]
    assert (await (await client.get("/audit",
                                    headers=OPERATOR)).json())["events"][0]["outcome"] == "invalid_options"


async def trainers_heard(client: Client, count: int = 1) -> None:
    """Until the gateway lists `count` live trainer instances (`GET /status`); fails after 5 s."""
    for _ in range(100):
        services = (await (await client.get("/status")).json())["services"]
        if sum(s["service"] == "trainer_service" for s in services) == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the gateway lists {services}, not {count} trainers")


@asynccontextmanager
async def another_trainer(client: Client, policy: FineTunePolicy | None) -> AsyncIterator[None]:
    """The heartbeat of a second trainer instance that consumes nothing: `policy` None is a
    trainer that predates the field (it says nothing of its fine-tune policy)."""
    beat = Heartbeat(client.app[BUS], client.app[SETTINGS].status_exchange, lambda: ServiceStatus(
        service="trainer_service", instance_id="another-trainer", started_at=time.time(), interval_s=0.1,
        fine_tune=policy), 0.1)
    beat.start()
    try:
        yield
    finally:
        await beat.stop()


async def test_fine_tuning_the_backbone_is_the_slower_option(make_client: MakeClient, tmp_path: Path) -> None:
    client = await seeded_client(make_client, tmp_path,
                                 {**LENIENT_GATE, "fine_tune_min_images": 1, "heartbeat_s": 0.2})
    await trainers_heard(client)  # the gateway knows its policy, which this catalog meets: accepted
    options = {"epochs": 5, "fine_tune": True, "fine_tune_epochs": 1}
    response = await client.post("/retrain", json=options, headers=OPERATOR)
    assert response.status == 202
    job = await wait_job(client, (await response.json())["job_id"], timeout=110)
    assert job["state"] == "succeeded", job.get("error")
    assert any("fine-tun" in line for line in job["log"])
    models = await (await client.get("/models")).json()
    newest = models["versions"][-1]
    assert newest["version"] == job["result"]["version"] and models["current"] == newest["version"]


async def test_a_fine_tune_the_catalog_is_too_small_for_is_refused_before_any_job(
        make_client: MakeClient, tmp_path: Path) -> None:
    client = await seeded_client(make_client, tmp_path, {"heartbeat_s": 0.2})  # the default: 200 a class
    await trainers_heard(client)
    response = await client.post("/retrain", json={"fine_tune": True}, headers=OPERATOR)
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["code"] == "not_enough_images_to_fine_tune"
    assert ("need 200 training images a class and 10 held-out images of each malignant class"
            in error["message"])
    summary = (await (await client.get("/data/summary")).json())["counts"]
    for label, images in summary["train"].items():  # every class is named, with its count
        assert f"{label}: {images} training images" in error["message"]
    assert f"melanoma: {summary['eval'].get('melanoma', 0)} held-out images" in error["message"]
    assert await client.app[STORE].list(TRAINING_CLAIMS) == []  # nothing claimed, so nothing queued
    event = (await (await client.get("/audit", headers=OPERATOR)).json())["events"][0]
    assert (event["action"], event["status"], event["outcome"]) == ("retrain", 422,
                                                                    "not_enough_images_to_fine_tune")
    head = await client.post("/retrain", json={"epochs": 1, "promote": False}, headers=OPERATOR)
    assert head.status == 202  # a head retrain needs no such catalog, and the claim was free
    await client.delete(f"/jobs/{(await head.json())['job_id']}", headers=OPERATOR)


async def test_a_fine_tune_is_refused_only_when_every_live_trainer_would_refuse_it(
        make_client: MakeClient, tmp_path: Path) -> None:
    await seed(tmp_path)
    client = await make_client(with_worker=False)  # no trainer consumes: an accepted job stays queued
    response = await client.post("/retrain", json={"fine_tune": True}, headers=OPERATOR)
    assert response.status == 202  # no trainer heard: queued, and the trainer that takes it decides
    assert (await client.delete(f"/jobs/{(await response.json())['job_id']}", headers=OPERATOR)).status == 200
    strict = FineTunePolicy(min_training_images=200, min_held_out_malignant=10,
                            unjudged_malignant_blocks=True)
    lenient = strict.model_copy(update={"min_training_images": 1, "unjudged_malignant_blocks": False})
    async with another_trainer(client, strict):
        await trainers_heard(client)
        response = await client.post("/retrain", json={"fine_tune": True}, headers=OPERATOR)
        assert response.status == 422
    for second in (lenient, None):  # one would train it, or one says nothing of its policy
        client = await make_client(with_worker=False)
        async with another_trainer(client, strict):
            await trainers_heard(client)
            beat = Heartbeat.of_service(client.app[BUS], client.app[SETTINGS].status_exchange,
                                        "trainer_service", 0.1, fine_tune=second)
            beat.start()
            try:
                await trainers_heard(client, 2)
                response = await client.post("/retrain", json={"fine_tune": True}, headers=OPERATOR)
                assert response.status == 202, await response.text()
                job_id = (await response.json())["job_id"]
                assert (await client.delete(f"/jobs/{job_id}", headers=OPERATOR)).status == 200
            finally:
                await beat.stop()


async def test_without_a_trainers_policy_a_thin_fine_tune_is_queued_and_its_job_refuses_it(
        make_client: MakeClient, tmp_path: Path) -> None:
    client = await seeded_client(make_client, tmp_path, {"heartbeat_s": 0.2})  # the default: 200 a class
    async with another_trainer(client, None):  # a trainer older than the policy in the heartbeat
        await trainers_heard(client, 2)
        response = await client.post("/retrain", json={"fine_tune": True}, headers=OPERATOR)
        assert response.status == 202  # the gateway cannot tell what that trainer would refuse
        job = await wait_job(client, (await response.json())["job_id"], timeout=60)
    assert job["state"] == "failed" and job["error"]["status"] == 422
    assert job["error"]["code"] == "not_enough_images_to_fine_tune"
    assert "need 200 training images a class" in job["error"]["message"]
    assert (await (await client.get("/models")).json())["current"] == "tiny-v1"


async def test_of_six_concurrent_retrains_one_is_accepted_and_five_are_told_which_job_runs(
        make_client: MakeClient) -> None:
    client = await make_client(with_worker=False)  # no trainer: the accepted job stays queued
    with scenario("concurrent retrains") as counts:
        responses = await asyncio.gather(*(client.post("/retrain", json={"epochs": 1}, headers=OPERATOR)
                                           for _ in range(6)))
        bodies = [await r.json() for r in responses]
        for response, body in zip(responses, bodies, strict=True):
            counts.answer(response.status, body)
        counts.notes.append("6 at once, in-process gateway on a local-disk store (its conditional create is "
                            "atomic; moto's is not)")
    statuses = sorted(r.status for r in responses)
    assert statuses == [202, 409, 409, 409, 409, 409], statuses
    accepted = next(b["job_id"] for r, b in zip(responses, bodies, strict=True) if r.status == 202)
    assert {b["job_id"] for b in bodies} == {accepted}  # every 409 names the job that was accepted
    assert all(b["error"]["code"] == "training_in_progress" for b in bodies if "error" in b)
    assert (await (await client.get(f"/jobs/{accepted}")).json())["state"] == "queued"
