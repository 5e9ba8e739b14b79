"""Upload, retrain, promote and survive a trainer crash, with every service its own process
on real RabbitMQ and an S3 server (the run's shared cluster, tests.support.cluster)."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
from typing import Any

import pytest

from tests.conftest import FIXTURES
from tests.support.cluster import Cluster
from tests.support.http import post_image
from tests.support.reliability import scenario
from tests.support.tokens import CONTRIBUTOR, OPERATOR

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


def test_upload_retrain_promote_and_a_trainer_crash(distributed_system: Cluster,
                                                    melanoma_jpeg: bytes) -> None:
    cluster = distributed_system
    base = cluster.base
    served = request("GET", f"{base}/models")[1]["current"]
    images = sorted((FIXTURES / "ham10000").glob("*/*.jpg"))
    files = [(f"{p.parent.name}_{p.stem}.jpg", p.read_bytes()) for p in images]
    files += [("melanoma_notes.jpg", b"not an image"), ("../../lupus_1.jpg", images[0].read_bytes())]
    status, accepted = post_files(f"{base}/upload-bulk", files)
    assert status == 202
    job = wait_state(base, accepted["job_id"], {"succeeded", "failed"})
    result = job["result"]
    # catalogued now: stored, or a duplicate of what an earlier test on this cluster uploaded
    assert job["state"] == "succeeded", job
    assert result["stored"] + result["duplicate"] == 28 and result["rejected"] == 2

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
    assert versions[0] == served and versions[-1] == version  # switched without a failed request

    # Kill the trainer mid-job: the job ends failed, serving goes on with the same model.
    with scenario("kill -9 the trainer mid-job") as counts:
        status, accepted = retrain(base, {"epochs": 500})
        counts.answer(status, accepted)
        assert status == 202
        job = wait_state(base, accepted["job_id"], {"running"})
        while job["progress"].get("phase") != "training":
            job = wait_state(base, accepted["job_id"], {"running"})
        cluster.procs["trainer_service"].send_signal(signal.SIGKILL)
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
        cluster.restart("trainer_service")
        status, again = retrain(base, {"epochs": 5, "promote": False})
        counts.answer(status, again)
        assert status == 202
        final = wait_state(base, again["job_id"], {"succeeded", "failed", "rejected"})["state"]
        counts.notes.append(f"serving unchanged on {version}; the next retrain {final}")
        assert final in ("succeeded", "rejected")
