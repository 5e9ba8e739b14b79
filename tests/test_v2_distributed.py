"""The Open Inference Protocol on the distributed system: tritonclient, unchanged, against a
gateway and an inference worker in their own processes on RabbitMQ and S3 (the run's shared
cluster, tests.support.cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.utils import InferenceServerException

from tests.support import triton as v2
from tests.support.cluster import Cluster
from tests.support.http import post_image

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_tritonclient_against_gateway_and_worker_processes(
        distributed_system: Cluster, fixture_images: dict[str, list[Path]]) -> None:
    base = distributed_system.base
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
