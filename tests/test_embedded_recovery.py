"""`make run` killed with `kill -9` and started again: an upload that was queued or half done
resumes and ends accounted for, a training job that was queued or running is failed with a
reason (the model unchanged), and /retrain is accepted again."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from shared.store import open_store
from tests.support.processes import embedded_env, free_port, python_module, running, wait_http
from tests.support.reliability import Scenario, lost_images, scenario
from tests.support.tokens import CONTRIBUTOR, OPERATOR

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
FIXTURES = Path(__file__).parent / "fixtures"
IMAGES = sorted([*(FIXTURES / "ham10000").rglob("*.jpg"), *(FIXTURES / "isic2017").rglob("*.jpg")])


#: What this test's requests got (docs/reliability.md); set for the duration of the test.
COUNTS = Scenario("kill -9 the embedded process with jobs queued")


def call(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, body, headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, answer = response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        status, answer = exc.code, json.loads(exc.read())
    except TimeoutError:
        COUNTS.hang()
        raise
    COUNTS.answer(status, answer)
    return status, answer


def upload(base: str, images: list[Path]) -> tuple[int, dict[str, Any]]:
    boundary = "dermascan-recovery-boundary"
    parts = [(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{path.parent.name}_'
              f'{path.name}"\r\nContent-Type: image/jpeg\r\n\r\n').encode() + path.read_bytes() + b"\r\n"
             for path in images]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return call("POST", f"{base}/upload-bulk", body,
                {**CONTRIBUTOR, "Content-Type": f"multipart/form-data; boundary={boundary}"})


def stored_job(var: Path, job_id: str) -> dict[str, Any]:
    """The job record as the killed process left it on disk."""
    return json.loads((var / "jobs" / f"{job_id}.json").read_text())  # type: ignore[no-any-return]


def final_job(base: str, job_id: str, timeout: float) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = call("GET", f"{base}/jobs/{job_id}")[1]
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s: {job['log'][-3:]}")


def test_after_a_kill_9_uploads_resume_training_is_failed_and_retrain_works_again(
        tmp_path: Path, tiny_model_dir: Path) -> None:
    global COUNTS
    with scenario("kill -9 the embedded process with jobs queued") as COUNTS:
        kill_and_restart(tmp_path, tiny_model_dir)


def kill_and_restart(tmp_path: Path, tiny_model_dir: Path) -> None:
    var = tmp_path / "var"
    env = embedded_env(tmp_path, tiny_model_dir, DERMASCAN_INFERENCE_ENGINE="tensorflow")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running(python_module("embedded"), env={**env, "DERMASCAN_HTTP_PORT": str(port)},
                 log=tmp_path / "first.log") as first:
        wait_http(f"{base}/readyz", timeout=120, proc=first)
        status, accepted_upload = upload(base, IMAGES)
        assert status == 202, accepted_upload
        COUNTS.accept_upload(len(IMAGES))
        status, accepted_training = call("POST", f"{base}/retrain", b"{}",
                                         {**OPERATOR, "Content-Type": "application/json"})
        assert status == 202, accepted_training
        first.send_signal(9)  # kill -9: no drain, no clean-up
        first.wait(10)
    upload_id, training_id = accepted_upload["job_id"], accepted_training["job_id"]
    left = {job_id: stored_job(var, job_id)["state"] for job_id in (upload_id, training_id)}
    assert set(left.values()) <= {"queued", "running"}, left  # the kill came before either finished

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running(python_module("embedded"), env={**env, "DERMASCAN_HTTP_PORT": str(port)},
                 log=tmp_path / "second.log") as second:
        wait_http(f"{base}/readyz", timeout=120, proc=second)
        training = call("GET", f"{base}/jobs/{training_id}")[1]
        assert training["state"] == "failed", training
        assert training["error"]["code"] == "interrupted"
        assert "model is unchanged" in training["error"]["message"]
        uploaded = final_job(base, upload_id, timeout=90)
        assert uploaded["state"] == "succeeded", uploaded["log"][-5:]
        outcomes = uploaded["result"]["files"]
        COUNTS.lost = asyncio.run(_lost(var, outcomes))
        COUNTS.notes.append(f"killed with an upload of {len(IMAGES)} images and a training job queued; after "
                            f"the restart the upload {uploaded['state']}, the training job "
                            f"{training['error']['code']}")
        assert len(outcomes) == len(IMAGES) and {f["status"] for f in outcomes} <= {"stored", "duplicate"}
        status, again = call("POST", f"{base}/retrain", b'{"epochs": 1}',
                             {**OPERATOR, "Content-Type": "application/json"})
        assert status == 202, again  # the interrupted job no longer holds the claim
        assert second.poll() is None


async def _lost(var: Path, outcomes: list[dict[str, Any]]) -> int:
    store = await open_store(var.as_uri())
    try:
        return await lost_images(store, outcomes, sent=len(IMAGES))
    finally:
        await store.close()
