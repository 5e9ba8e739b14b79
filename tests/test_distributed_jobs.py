"""Upload, retrain, promote and survive a trainer crash, with every service its own process
on real RabbitMQ and an S3 server."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AWS_ENV, FIXTURES
from tests.support.http import post_image
from tests.support.processes import free_port, python_module, running, wait_http
from tests.support.reliability import scenario
from tests.support.tokens import CONTRIBUTOR, OPERATOR, TOKEN_ENV

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def request(method: str, url: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, body, headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def post_files(url: str, files: list[tuple[str, bytes]]) -> tuple[int, Any]:
    boundary = "dermascan-upload-boundary"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n\r\n'.encode()
        + data + b"\r\n" for name, data in files) + f"--{boundary}--\r\n".encode()
    return request("POST", url, body,
                   {"Content-Type": f"multipart/form-data; boundary={boundary}", **CONTRIBUTOR})


def retrain(base: str, options: dict[str, Any]) -> tuple[int, Any]:
    return request("POST", f"{base}/retrain", json.dumps(options).encode(),
                   {"Content-Type": "application/json", **OPERATOR})


def wait_state(base: str, job_id: str, states: set[str], timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, job = request("GET", f"{base}/jobs/{job_id}")
        if job["state"] in states:
            return job  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


def cluster_env(broker_url: str, s3_endpoint: str, unique: str, tmp_path: Path,
                tiny_model_dir: Path) -> dict[str, str]:
    """The settings every service of one test's cluster shares (its own queues and bucket)."""
    return {
        **AWS_ENV,
        "DERMASCAN_BROKER_URL": broker_url, "DERMASCAN_STORE_URL": f"s3://{unique}",
        "DERMASCAN_S3_ENDPOINT_URL": s3_endpoint, "DERMASCAN_HTTP_PORT": str(free_port()),
        **{f"DERMASCAN_{name.upper()}_QUEUE": f"{unique}.{name}" for name in ("predict", "ingest", "train")},
        **{f"DERMASCAN_{name.upper()}_EXCHANGE": f"{unique}.{name}" for name in ("status", "models")},
        "DERMASCAN_BUNDLED_MODEL_DIR": str(tiny_model_dir), "DERMASCAN_HEARTBEAT_S": "1",
        "DERMASCAN_JOB_STALE_S": "4", "DERMASCAN_PROGRESS_INTERVAL_S": "0.5",
        "DERMASCAN_MODEL_CACHE_DIR": str(tmp_path / "cache"), "DERMASCAN_WORK_DIR": str(tmp_path / "trainer"),
        **TOKEN_ENV,
        # A gate that lets the first candidate through (margins are the trainer's settings).
        "DERMASCAN_MAX_BALANCED_ACCURACY_DROP": "1", "DERMASCAN_MAX_CLASS_RECALL_DROP": "1",
        "DERMASCAN_GATE_MALIGNANT_MAX_RECALL_DROP": "1", "DERMASCAN_GATE_MIN_CLASS_SUPPORT": "1",
        "DERMASCAN_GATE_UNJUDGED_MALIGNANT_BLOCKS": "false",
        "DERMASCAN_PREDICT_RATE_PER_S": "0",  # one test client predicts in a tight loop: no per-caller limit
    }


@pytest.fixture
def cluster(rabbit_url: str, s3_endpoint: str, unique: str, tmp_path: Path,
            tiny_model_dir: Path) -> Iterator[dict[str, Any]]:
    env = cluster_env(rabbit_url, s3_endpoint, unique, tmp_path, tiny_model_dir)
    base = f"http://127.0.0.1:{env['DERMASCAN_HTTP_PORT']}"
    with ExitStack() as stack:
        def start(module: str) -> Any:
            return stack.enter_context(running(python_module(module),
                                               env={**env, "DERMASCAN_METRICS_PORT": str(free_port())},
                                               log=tmp_path / f"{module}-{time.monotonic_ns()}.log"))
        procs = {name: start(name)
                 for name in ("gateway", "inference_worker", "ingest_service", "trainer_service")}
        wait_http(f"{base}/readyz", timeout=120, proc=procs["inference_worker"])
        yield {"base": base, "procs": procs, "start": start}


def test_upload_retrain_promote_and_a_trainer_crash(cluster: dict[str, Any], melanoma_jpeg: bytes) -> None:
    base, procs = cluster["base"], cluster["procs"]
    images = sorted((FIXTURES / "ham10000").glob("*/*.jpg"))
    files = [(f"{p.parent.name}_{p.stem}.jpg", p.read_bytes()) for p in images]
    files += [("melanoma_notes.jpg", b"not an image"), ("../../lupus_1.jpg", images[0].read_bytes())]
    status, accepted = post_files(f"{base}/upload-bulk", files)
    assert status == 202
    job = wait_state(base, accepted["job_id"], {"succeeded", "failed"})
    assert job["state"] == "succeeded" and job["result"]["stored"] == 28 and job["result"]["rejected"] == 2

    # Predictions keep flowing while a model is trained and promoted.
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def predict_forever() -> None:
        while not stop.is_set():
            code, body = post_image(f"{base}/predict", melanoma_jpeg)
            answers.append((code, body.get("model_version") if code == 200 else json.dumps(body)))  # type: ignore[arg-type]

    load = threading.Thread(target=predict_forever)
    load.start()
    try:
        status, accepted = retrain(base, {"epochs": 30})
        assert status == 202
        seen = [wait_state(base, accepted["job_id"], {"running", "succeeded"})["state"]]
        job = wait_state(base, accepted["job_id"], {"succeeded", "failed", "rejected"})
        assert job["state"] == "succeeded", (job.get("error"), job["log"][-6:])
        seen.append(job["state"])
        version = job["result"]["version"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not answers or answers[-1][1] != version):
            time.sleep(0.1)
    finally:
        stop.set()
        load.join()
    assert seen[0] in ("running", "succeeded") and seen[-1] == "succeeded"
    assert all(code == 200 for code, _ in answers), [a for a in answers if a[0] != 200][:3]
    versions = [v for _, v in answers]
    assert versions[0] == "tiny-v1" and versions[-1] == version  # switched without a failed request

    # Kill the trainer mid-job: the job ends failed, serving goes on with the same model.
    with scenario("kill -9 the trainer mid-job") as counts:
        status, accepted = retrain(base, {"epochs": 500})
        counts.answer(status, accepted)
        assert status == 202
        job = wait_state(base, accepted["job_id"], {"running"})
        while job["progress"].get("phase") != "training":
            job = wait_state(base, accepted["job_id"], {"running"})
        procs["trainer_service"].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        failed = wait_state(base, accepted["job_id"], {"failed"}, timeout=30)
        after = time.monotonic() - killed
        counts.notes.append(f"job failed {failed['error']['code']} {after:.1f} s after the kill "
                            "(DERMASCAN_JOB_STALE_S=4)")
        assert failed["error"]["code"] == "worker_lost"
        code, body = post_image(f"{base}/predict", melanoma_jpeg)
        counts.answer(code, body)
        assert code == 200 and body["model_version"] == version
        code, models = request("GET", f"{base}/models")
        counts.answer(code, models)
        assert models["current"] == version
        # A new trainer picks up the redelivered message, sees the job is over, and acknowledges it.
        cluster["start"]("trainer_service")
        status, again = retrain(base, {"epochs": 5, "promote": False})
        counts.answer(status, again)
        assert status == 202
        final = wait_state(base, again["job_id"], {"succeeded", "failed", "rejected"})["state"]
        counts.notes.append(f"serving unchanged on {version}; the next retrain {final}")
        assert final in ("succeeded", "rejected")
