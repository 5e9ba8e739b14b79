"""`POST /predict` as a client sees it, including every error the API documents."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from PIL import Image

from tests.gateway.conftest import MakeClient
from tests.support.http import form

pytestmark = pytest.mark.timeout(60)


def gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, "GIF")
    return buffer.getvalue()


async def test_predict_answers_with_a_full_prediction(make_client: MakeClient, melanoma_jpeg: bytes) -> None:
    client = await make_client()
    response = await client.post("/predict", data=form(melanoma_jpeg))
    assert response.status == 200
    body = await response.json()
    assert set(body["probabilities"]) == {"melanoma", "melanocytic_nevi", "benign_keratosis"}
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-4
    assert body["label"] == body["top_k"][0]["label"]
    assert body["confidence"] == pytest.approx(body["probabilities"][body["label"]])
    assert len(body["top_k"]) == 3 and body["model_version"] == "tiny-v1"
    assert body["latency_ms"] > 0


@pytest.mark.parametrize(
    "payload,status,code",
    [
        (b"just some text, not a picture", 400, "not_an_image"),
        (b"", 400, "empty_file"),
        (None, 415, "unsupported_format"),  # a GIF
    ],
)
async def test_bad_uploads_get_clear_errors(make_client: MakeClient, payload: bytes | None, status: int,
                                            code: str) -> None:
    client = await make_client()
    response = await client.post("/predict", data=form(gif() if payload is None else payload))
    assert response.status == status
    assert (await response.json())["error"]["code"] == code


async def test_a_corrupt_image_is_a_400_from_the_worker(make_client: MakeClient,
                                                        melanoma_jpeg: bytes) -> None:
    client = await make_client()
    response = await client.post("/predict", data=form(melanoma_jpeg[:600]))
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "corrupt_image" and "decoded" in error["message"]
    # the worker lived through it
    assert (await client.post("/predict", data=form(melanoma_jpeg))).status == 200


async def test_too_large_is_413(make_client: MakeClient) -> None:
    client = await make_client(max_upload_bytes=20_000)
    response = await client.post("/predict", data=form(b"\xff\xd8\xff" + b"0" * 30_000))
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "file_too_large"


async def test_missing_field_is_422(make_client: MakeClient, melanoma_jpeg: bytes) -> None:
    client = await make_client()
    response = await client.post("/predict", data=form(melanoma_jpeg, name="image"))
    assert response.status == 422
    assert "'file'" in (await response.json())["error"]["message"]
    response = await client.post("/predict", data=melanoma_jpeg)
    assert response.status == 422


async def test_no_worker_means_504_at_the_deadline(make_client: MakeClient, melanoma_jpeg: bytes) -> None:
    client = await make_client(with_worker=False, predict_timeout_s=0.3)
    response = await client.post("/predict", data=form(melanoma_jpeg))
    assert response.status == 504
    assert (await response.json())["error"]["code"] == "deadline_exceeded"
    assert (await client.get("/readyz")).status == 503


async def test_past_the_in_flight_bound_the_answer_is_an_immediate_429(make_client: MakeClient,
                                                                       melanoma_jpeg: bytes) -> None:
    client = await make_client(with_worker=False, predict_timeout_s=1.0, max_in_flight=2)
    waiting = [asyncio.create_task(client.post("/predict", data=form(melanoma_jpeg))) for _ in range(2)]
    await asyncio.sleep(0.2)
    refused = await client.post("/predict", data=form(melanoma_jpeg))
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"
    assert [r.status for r in await asyncio.gather(*waiting)] == [504, 504]


async def test_no_broker_means_503(make_client: MakeClient, melanoma_jpeg: bytes) -> None:
    client = await make_client(with_worker=False, broker_url="amqp://guest:guest@127.0.0.1:1/")
    response = await client.post("/predict", data=form(melanoma_jpeg))
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "broker_unavailable"
    ready = await client.get("/readyz")
    assert ready.status == 503 and "broker unreachable" in (await ready.json())["problems"]
    assert (await client.get("/livez")).status == 200


async def test_a_malformed_message_gets_an_error_reply_and_the_worker_lives_on(
        make_client: MakeClient, melanoma_jpeg: bytes) -> None:
    from gateway.keys import BUS, SETTINGS
    from shared.messages import PredictReply, decode

    client = await make_client()
    bus, queue = client.app[BUS], client.app[SETTINGS].predict_queue
    reply = decode(PredictReply, await bus.call(queue, b'{"not": "a predict request"}', timeout=5))
    assert reply.result is None and reply.error is not None and reply.error.code == "bad_message"
    assert (await client.post("/predict", data=form(melanoma_jpeg))).status == 200


async def test_model_input_on_request_is_exactly_what_the_model_was_given(make_client: MakeClient,
                                                                          melanoma_jpeg: bytes,
                                                                          tiny_model_dir: Path) -> None:
    import base64
    import json

    import numpy as np

    from shared.imaging import load_for_model

    client = await make_client()
    plain = await (await client.post("/predict", data=form(melanoma_jpeg))).json()
    assert "model_input" not in plain  # the default answer is unchanged
    response = await client.post("/predict?model_input=true", data=form(melanoma_jpeg))
    assert response.status == 200
    body = await response.json()
    prefix = "data:image/png;base64,"
    assert body["model_input"].startswith(prefix) and body["label"] == plain["label"]
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["model_input"][len(prefix):]))))
    manifest = json.loads((tiny_model_dir / "manifest.json").read_text())
    expected = load_for_model(melanoma_jpeg, tuple(manifest["input_size"]), policy=manifest["preprocessing"])
    assert seen.shape == expected.shape and np.array_equal(seen, expected)
    bad = await client.post("/predict?model_input=maybe", data=form(melanoma_jpeg))
    assert bad.status == 400 and (await bad.json())["error"]["code"] == "invalid_model_input"
