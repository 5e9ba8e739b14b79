"""The Open Inference Protocol on the distributed system: tritonclient, unchanged, against a
gateway and an inference worker in their own processes on RabbitMQ and S3."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
from tritonclient.utils import InferenceServerException

from tests.support import triton as v2
from tests.support.http import post_image
from tests.support.processes import free_port, python_module, running, wait_http
from tests.test_distributed_jobs import cluster_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_tritonclient_against_gateway_and_worker_processes(
        rabbit_url: str, s3_endpoint: str, unique: str, tmp_path: Path, tiny_model_dir: Path,
        fixture_images: dict[str, list[Path]]) -> None:
    env = cluster_env(rabbit_url, s3_endpoint, unique, tmp_path, tiny_model_dir)
    base = f"http://127.0.0.1:{env['DERMASCAN_HTTP_PORT']}"
    with ExitStack() as stack:
        for module in ("gateway", "inference_worker"):
            proc = stack.enter_context(running(python_module(module),
                                               env={**env, "DERMASCAN_METRICS_PORT": str(free_port())},
                                               log=tmp_path / f"{module}.log"))
        wait_http(f"{base}/readyz", timeout=120, proc=proc)
        client = v2.client(base)
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(v2.MODEL)
        classes = client.get_model_metadata(v2.MODEL)["parameters"]["classes"].split(",")
        images = v2.eight(fixture_images)
        answers = []
        for image in images:
            status, answer = post_image(f"{base}/predict", image)
            assert status == 200, answer
            answers.append(answer)
        for binary in (True, False):
            for batch in (images[:1], images):
                result = v2.infer(base, batch, binary=binary)
                v2.assert_same(v2.as_lists(result), answers[:len(batch)], classes)
        try:
            v2.infer(base, [b"GIF89a" + b"\0" * 100], binary=True)
        except InferenceServerException as exc:
            assert exc.status() == "415" and "GIF images are not supported" in exc.message()
        else:
            raise AssertionError("a GIF was answered")
