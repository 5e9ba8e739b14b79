"""Every retrain is an MLflow run on a real tracking server (`mlflow server`, SQLite, local
artifacts), found through MLflow's own client; a tracking server that is gone never fails one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from shared.store import open_store
from tests.conftest import FIXTURES, TEST_SPLIT_SECRET
from tests.gateway.conftest import MakeClient
from tests.support.http import wait_job
from tests.support.processes import free_port, running, wait_http
from tests.support.tokens import OPERATOR
from trainer_service.commands.importer import import_dataset

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
#: Any candidate passes (the gate is tested elsewhere); these tests are about what gets logged.
LENIENT = {"max_balanced_accuracy_drop": 1.0, "max_class_recall_drop": 1.0,
           "gate_malignant_max_recall_drop": 1.0, "gate_min_class_support": 1,
           "gate_unjudged_malignant_blocks": False}
UI = "http://mlflow.example:5000"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    mlflow = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "mlflow"
    command = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts")]
    with running(command, log=root / "server.log") as proc:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=120, proc=proc)
        yield f"http://127.0.0.1:{port}"


async def retrained(make_client: MakeClient, tmp_path: Path,
                    tracking: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    store = await open_store(tmp_path.as_uri())
    await import_dataset(store, FIXTURES / "ham10000",
                         split_secret=SecretStr(TEST_SPLIT_SECRET), log=lambda _: None)
    client = await make_client(with_jobs=True, trainer={**LENIENT, **tracking})
    accepted = await (await client.post("/retrain", json={"epochs": 6}, headers=OPERATOR)).json()
    job = await wait_job(client, accepted["job_id"], timeout=120)
    assert job["state"] == "succeeded", job.get("error")
    return client, job


async def test_a_retrain_is_a_run_with_its_epochs_gate_and_manifest(
        make_client: MakeClient, tmp_path: Path, mlflow_server: str) -> None:
    from mlflow.tracking import MlflowClient

    client, job = await retrained(make_client, tmp_path, {"MLFLOW_TRACKING_URI": mlflow_server,
                                                          "mlflow_ui_url": UI})
    version = job["result"]["version"]
    mlflow = MlflowClient(tracking_uri=mlflow_server)
    experiment = mlflow.get_experiment_by_name("dermascan")
    assert experiment is not None
    runs = mlflow.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`dermascan.version` = '{version}'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == version
    assert run.data.tags["dermascan.gate"] == "passed" and run.data.tags["dermascan.command"] == "retrain"
    assert run.data.params["parent_version"] == "tiny-v1" and run.data.params["options.epochs"] == "6"
    assert "data.fit.import.melanoma" in run.data.params  # images per source and class
    assert [m.step for m in mlflow.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4, 5, 6]
    assert "eval.balanced_accuracy" in run.data.metrics
    names = {a.path for a in mlflow.list_artifacts(run.info.run_id)}
    assert {"manifest.json", "gate.json"} <= names
    models = await (await client.get("/models")).json()
    listed = next(v for v in models["versions"] if v["version"] == version)
    assert listed["tracking_url"] == f"{UI}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"
    for _ in range(50):  # the promotion's broadcast tags the run of the version now served
        if "dermascan.promoted_at" in mlflow.get_run(run.info.run_id).data.tags:
            break
        await asyncio.sleep(0.2)
    assert "dermascan.promoted_at" in mlflow.get_run(run.info.run_id).data.tags


async def test_a_tracking_server_that_is_gone_never_fails_a_retrain(make_client: MakeClient,
                                                                     tmp_path: Path) -> None:
    gone = f"http://127.0.0.1:{free_port()}"
    client, job = await retrained(make_client, tmp_path, {"MLFLOW_TRACKING_URI": gone})
    assert job["result"]["promoted"]
    models = await (await client.get("/models")).json()
    made = next(v for v in models["versions"] if v["version"] == job["result"]["version"])
    assert made["tracking_url"] is None
    text = await (await client.get("/metrics")).text()
    failures = [float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("dermascan_trainer_service_tracking_failures_total ")]
    assert failures and failures[0] >= 1  # counted, and the job went on


def test_an_offline_command_is_a_run_too(mlflow_server: str) -> None:
    from mlflow.tracking import MlflowClient

    from shared.manifest import ModelManifest
    from shared.settings import REPO_ROOT
    from trainer_service.tracking import log_offline

    shipped = REPO_ROOT / "models" / "base" / "manifest.json"
    manifest = ModelManifest.model_validate_json(shipped.read_text())
    log_offline(mlflow_server, "soup", manifest)
    mlflow = MlflowClient(tracking_uri=mlflow_server)
    experiment = mlflow.get_experiment_by_name("dermascan")
    assert experiment is not None
    runs = mlflow.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`dermascan.version` = '{manifest.version}'")
    assert [r.data.tags["dermascan.command"] for r in runs] == ["soup"]
    assert runs[0].data.params["recipe.kind"] == "soup"
    assert "validation.ham10000.balanced_accuracy" in runs[0].data.metrics
