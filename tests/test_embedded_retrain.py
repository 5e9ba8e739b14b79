"""The first user's walk on `make run`: a picture that is not dermoscopy is called so; then upload
a few dozen images of a class the seeded catalog lacks (seborrheic keratosis), press Retrain, and
the system learns from them — promoted, predicting the class, old classes within noise."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.processes import free_port, python_module, running, wait_http
from tests.support.tokens import CONTRIBUTOR, OPERATOR, TOKEN_ENV

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]
FIXTURES = Path(__file__).parent / "fixtures"
SK = sorted((FIXTURES / "isic2017" / "seborrheic_keratosis").iterdir())


async def finished(session: aiohttp.ClientSession, base: str, job_id: str, timeout: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        async with session.get(f"{base}/jobs/{job_id}") as response:
            job: dict[str, Any] = await response.json()
        if job["state"] not in ("queued", "running"):
            return job
        await asyncio.sleep(1)
    raise AssertionError(f"job {job_id} still {job['state']} after {timeout}s")


async def test_upload_a_new_class_and_retrain_on_the_embedded_system(tmp_path: Path) -> None:
    port = free_port()
    env = {"DERMASCAN_HTTP_PORT": str(port), "DERMASCAN_STORE_URL": (tmp_path / "var").as_uri(),
           "DERMASCAN_MODEL_CACHE_DIR": str(tmp_path / "cache"), **TOKEN_ENV}
    base = f"http://127.0.0.1:{port}"
    uploaded, kept = SK[:20], SK[20:]  # the last four the model never sees
    with running(python_module("embedded"), env=env, log=tmp_path / "embedded.log") as proc:
        wait_http(f"{base}/readyz", timeout=180, proc=proc)
        async with aiohttp.ClientSession() as session:
            async def predict(path: Path) -> dict[str, Any]:
                form = aiohttp.FormData()
                data = await asyncio.to_thread(path.read_bytes)
                form.add_field("file", data, filename=path.name, content_type="image/jpeg")
                async with session.post(f"{base}/predict", data=form) as response:
                    assert response.status == 200, await response.text()
                    answer: dict[str, Any] = await response.json()
                    return answer

            board = await predict(FIXTURES / "ood" / "circuit-00.png")
            assert board["out_of_distribution"] and board["ood_score"] > board["ood_threshold"], board
            lesion = await predict(kept[0])
            assert not lesion["out_of_distribution"] and isinstance(lesion["uncertain"], bool)

            form = aiohttp.FormData()
            for path in uploaded:
                form.add_field("files", path.read_bytes(), filename=f"seborrheic_keratosis_{path.name}",
                               content_type="image/jpeg")
            async with session.post(f"{base}/upload-bulk", data=form, headers=CONTRIBUTOR) as response:
                assert response.status == 202, await response.text()
                upload = await finished(session, base, (await response.json())["job_id"], 60)
            assert upload["state"] == "succeeded", upload
            assert sum(f["status"] == "stored" for f in upload["result"]["files"]) == len(uploaded)

            async with session.post(f"{base}/retrain", json={}, headers=OPERATOR) as response:
                assert response.status == 202, await response.text()
                job = await finished(session, base, (await response.json())["job_id"], 300)
            assert job["state"] == "succeeded", job.get("error") or job["log"][-5:]
            result = job["result"]
            assert result["promoted"] and "seborrheic_keratosis" in result["classes"]
            verdicts = {v["label"]: v for v in result["gate"]["classes"]}
            assert not [v for v in verdicts.values() if v["judgement"] == "worse"], verdicts
            assert result["gate"]["balanced_accuracy_change"] is not None

            for _ in range(60):  # the worker loads the promoted version in the background
                if (await predict(kept[0]))["model_version"] == result["version"]:
                    break
                await asyncio.sleep(1)
            answers = [await predict(path) for path in kept]
            assert {a["model_version"] for a in answers} == {result["version"]}
            said = [a["label"] for a in answers]
            assert said.count("seborrheic_keratosis") >= 2, said
            assert all(a["parent"] == "benign_keratosis"
                       for a in answers if a["label"] == "seborrheic_keratosis")
