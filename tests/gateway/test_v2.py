"""The Open Inference Protocol (`/v2/...`) as a v2 client sees it: tritonclient, unchanged, against
a gateway and a worker on the in-memory bus, as the embedded mode runs them."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from bench.loadgen import drive
from shared.manifest import ModelManifest
from shared.registry import ModelRegistry
from shared.store import open_store
from tests.gateway.conftest import Client, MakeClient
from tests.support import triton as v2
from tests.support.http import form
from tests.support.tokens import OPERATOR

pytestmark = pytest.mark.timeout(120)


async def predicted(client: Client, images: list[bytes]) -> list[dict[str, Any]]:
    """What `POST /predict` says of each image."""
    answers = []
    for image in images:
        response = await client.post("/predict", data=form(image))
        assert response.status == 200
        answers.append(await response.json())
    return answers


def check_server(base: str) -> dict[str, Any]:
    """Health and metadata through tritonclient."""
    client = v2.client(base)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(v2.MODEL) and client.is_model_ready(v2.MODEL, "tiny-v1")
    assert not client.is_model_ready(v2.MODEL, "no-such-version") and not client.is_model_ready("other")
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    metadata: dict[str, Any] = client.get_model_metadata(v2.MODEL)
    assert metadata == client.get_model_metadata(v2.MODEL, "tiny-v1")
    return metadata


async def test_tritonclient_gets_what_predict_gives(make_client: MakeClient,
                                                    fixture_images: dict[str, list[Path]]) -> None:
    client = await make_client()
    base = str(client.make_url("")).rstrip("/")
    metadata = await asyncio.to_thread(check_server, base)
    assert metadata["versions"] == ["tiny-v1"] and metadata["platform"] == "keras"
    assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in metadata["outputs"]} == {
        "probabilities": ("FP32", [-1, 3]), "label": ("BYTES", [-1]), "out_of_distribution": ("BOOL", [-1]),
        "ood_score": ("FP32", [-1]), "uncertain": ("BOOL", [-1]), "referral": ("BYTES", [-1]),
        "top_k": ("BYTES", [-1])}
    classes = metadata["parameters"]["classes"].split(",")
    assert classes == ["melanoma", "melanocytic_nevi", "benign_keratosis"]
    images = v2.eight(fixture_images)
    answers = await predicted(client, images)
    for batch, binary in ((images[:1], True), (images[:1], False), (images, True), (images, False)):
        result = await asyncio.to_thread(v2.infer, base, batch, binary=binary)
        response = result.get_response()
        assert (response["model_name"], response["model_version"]) == ("dermascan", "tiny-v1")
        assert all(("data" in o) is not binary for o in response["outputs"])
        outputs = v2.as_lists(result)
        assert result.as_numpy("probabilities").shape == (len(batch), 3)
        v2.assert_same(outputs, answers[:len(batch)], classes)


async def test_all_outputs_unasked_come_binary_and_top_k_is_a_parameter(
        make_client: MakeClient, melanoma_jpeg: bytes) -> None:
    client = await make_client()
    base = str(client.make_url("")).rstrip("/")
    result = await asyncio.to_thread(v2.infer, base, [melanoma_jpeg], binary=True, version="tiny-v1",
                                     outputs=None, top_k=1)
    assert [o["name"] for o in result.get_response()["outputs"]] == list(v2.OUTPUTS)
    assert len(json.loads(result.as_numpy("top_k")[0])) == 1
    result = await asyncio.to_thread(v2.infer, base, [melanoma_jpeg], binary=False, outputs=("label",))
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label"]


def refused(base: str, images: list[bytes], **options: Any) -> InferenceServerException:
    try:
        v2.infer(base, images, **options)
    except InferenceServerException as exc:
        return exc
    raise AssertionError("the request was answered")


async def test_errors_come_in_the_protocols_shape_with_the_native_statuses(
        make_client: MakeClient, melanoma_jpeg: bytes) -> None:
    client = await make_client()
    base = str(client.make_url("")).rstrip("/")
    text = b"just some text, not a picture"
    error = await asyncio.to_thread(refused, base, [melanoma_jpeg, text], binary=True)
    assert error.status() == "400" and "image 1: the file is not an image" in error.message()
    error = await asyncio.to_thread(refused, base, [melanoma_jpeg[:600]], binary=False)
    assert error.status() == "400" and "decoded" in error.message()  # the worker's corrupt_image
    error = await asyncio.to_thread(refused, base, [melanoma_jpeg], binary=True, version="v9")
    assert error.status() == "404" and "no version 'v9'" in error.message()
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array(["not base64!"], dtype=np.object_), binary_data=False)
    response = await client.post("/v2/models/dermascan/infer", json={"inputs": [tensor._get_tensor()]})
    assert response.status == 400 and "not base64" in (await response.json())["error"]
    response = await client.post("/v2/models/dermascan/infer", data=b"{not json")
    assert response.status == 422 and list(await response.json()) == ["error"]
    response = await client.get("/v2/models/other")
    assert response.status == 404 and "this server serves 'dermascan'" in (await response.json())["error"]
    response = await client.get("/v2/models/dermascan/versions/current.json")
    assert response.status == 400 and list(await response.json()) == ["error"]


async def test_a_closed_gateway_needs_a_token_to_infer_and_limits_still_apply(
        make_client: MakeClient, melanoma_jpeg: bytes) -> None:
    client = await make_client(open_predict=False, predict_burst=4, max_upload_bytes=len(melanoma_jpeg) - 1)
    base = str(client.make_url("")).rstrip("/")
    error = await asyncio.to_thread(refused, base, [melanoma_jpeg], binary=True)
    assert error.status() == "401"
    assert await asyncio.to_thread(v2.client(base).is_model_ready, v2.MODEL)  # health stays open
    response = await client.post("/v2/models/dermascan/infer", headers=OPERATOR, json={"inputs": [
        {"name": "image", "datatype": "BYTES", "shape": [5], "data": ["AA=="] * 5}]})
    assert response.status == 413
    assert "5 images in one request; the limit is 4" in (await response.json())["error"]
    response = await client.post("/v2/models/dermascan/infer", headers=OPERATOR, json={"inputs": [
        {"name": "image", "datatype": "BYTES", "shape": [1],
         "data": [base64.b64encode(melanoma_jpeg).decode()]}]})
    assert response.status == 413 and "the limit is" in (await response.json())["error"]


async def test_a_version_in_the_registry_that_no_worker_serves_is_refused_not_substituted(
        make_client: MakeClient, tmp_path: Path, tiny_model_dir: Path, melanoma_jpeg: bytes) -> None:
    client = await make_client()
    manifest = ModelManifest.model_validate_json((tiny_model_dir / "manifest.json").read_text())
    registry = ModelRegistry(await open_store(tmp_path.as_uri()))
    await registry.publish(tiny_model_dir / "model.keras", manifest.model_copy(update={"version": "tiny-v2"}))
    base = str(client.make_url("")).rstrip("/")
    assert not await asyncio.to_thread(v2.client(base).is_model_ready, v2.MODEL, "tiny-v2")
    metadata = await asyncio.to_thread(v2.client(base).get_model_metadata, v2.MODEL, "tiny-v2")
    assert metadata["parameters"]["version"] == "tiny-v2" and metadata["versions"] == ["tiny-v1"]
    error = await asyncio.to_thread(refused, base, [melanoma_jpeg], binary=True, version="tiny-v2")
    assert error.status() == "409" and "'tiny-v2' is not loaded" in error.message()


async def test_the_serving_benchmarks_v2_requests_are_answered(make_client: MakeClient,
                                                               fixture_images: dict[str, list[Path]]) -> None:
    client = await make_client(predict_rate_per_s=0)
    result = await drive(str(client.make_url("/v2/models/dermascan/infer")), v2.eight(fixture_images),
                         clients=2, seconds=1.0, warmup_s=0.2, protocol="v2")
    assert result.errors == 0, result.error_kinds
    assert result.ok > 0
