"""How messages travel (shared/wire.py): an image as raw bytes with its fields in headers, JSON
for the rest; fields a reader does not know are ignored, a newer major version is refused."""

from __future__ import annotations

import json
import time

import pytest
from pydantic import Field, ValidationError

from shared.errors import BadRequest, DermaScanError, ServiceUnavailable
from shared.messages import (
    ClassScore,
    Prediction,
    PredictReply,
    PredictRequest,
    TrainOptions,
    TrainRequest,
    WorkerStatus,
    encode,
    parse_status,
)
from shared.wire import NEWER_SCHEMA, Message, NewerSchema, decode, from_wire, refusal, to_wire

IMAGE = b"\xff\xd8\xff\xe0 not really a JPEG, but bytes all the same \x00\x01\xfe"


def request() -> PredictRequest:
    return PredictRequest(image=IMAGE, image_format="jpeg", deadline=time.time() + 30, top_k=5,
                          want_input=True)


class NextPredictRequest(PredictRequest):
    """What a later gateway may send: one more field, same major version."""

    model_version: str | None = Field(None, description="The version asked for.")


class FuturePredictRequest(PredictRequest):
    """What a gateway of the next major version sends."""

    schema_version: int = Field(2, description="A change version 1 readers cannot follow.")


def test_a_predict_request_travels_as_the_raw_image_with_its_fields_in_headers() -> None:
    sent = request()
    wire = to_wire(sent)
    assert wire.body == IMAGE  # not base64, not JSON
    assert wire.headers["image_format"] == "jpeg" and wire.headers["top_k"] == 5
    assert wire.headers["want_input"] is True and wire.headers["schema_version"] == 1
    assert wire.headers["message_id"] == sent.message_id
    assert from_wire(PredictRequest, wire.body, wire.headers) == sent


def test_times_travel_exactly_though_amqp_keeps_floats_in_32_bits() -> None:
    sent = request()
    wire = to_wire(sent)
    assert isinstance(wire.headers["deadline"], str)
    got = from_wire(PredictRequest, wire.body, wire.headers)
    assert got.deadline == sent.deadline and got.sent_at == sent.sent_at


def test_messages_without_a_payload_travel_as_json() -> None:
    job = TrainRequest(job_id="j1", options=TrainOptions(epochs=2))
    wire = to_wire(job)
    assert wire.headers == {} and json.loads(wire.body)["options"]["epochs"] == 2
    assert from_wire(TrainRequest, wire.body, wire.headers) == job


def test_a_request_from_a_gateway_of_before_raw_bytes_is_still_read() -> None:
    sent = request()
    assert from_wire(PredictRequest, encode(sent), {}) == sent  # base64 JSON body, no headers


def test_fields_and_headers_a_reader_does_not_know_are_ignored() -> None:
    wire = to_wire(NextPredictRequest(image=IMAGE, image_format="png", deadline=time.time() + 5,
                                      model_version="v7"))
    got = from_wire(PredictRequest, wire.body, {**wire.headers, "x-trace-id": "abc"})
    assert type(got) is PredictRequest and got.image == IMAGE and got.image_format == "png"


def test_a_reply_from_a_newer_worker_is_read_by_an_older_gateway() -> None:
    reply = json.loads(PredictReply(
        result=Prediction(label="melanoma", confidence=0.9, probabilities={"melanoma": 0.9},
                          top_k=[ClassScore(label="melanoma", probability=0.9)], model_version="v1"),
        worker_id="w1").model_dump_json())
    reply["engine_threads"] = 2  # new fields at the top and deep inside
    reply["result"]["saliency"] = [0.1, 0.2]
    reply["result"]["top_k"][0]["rank"] = 1
    got = decode(PredictReply, json.dumps(reply).encode())
    assert got.result is not None and got.result.top_k[0].label == "melanoma"


def test_a_heartbeat_with_new_fields_is_still_a_heartbeat() -> None:
    body = json.loads(WorkerStatus(worker_id="w1", model_version="v1").model_dump_json())
    body["gpu"] = "none"
    status = parse_status(json.dumps(body).encode())
    assert isinstance(status, WorkerStatus) and status.worker_id == "w1"


def test_what_code_builds_and_what_users_send_stays_strict() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        PredictRequest(image=IMAGE, image_format="jpeg", deadline=0.0, top_kk=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):  # POST /retrain's body
        TrainOptions.model_validate_json(b'{"epochs": 3, "max_balanced_accuracy_drop": 0.5}')


def test_a_newer_major_version_is_refused_before_its_fields_are_read() -> None:
    wire = to_wire(FuturePredictRequest(image=IMAGE, image_format="jpeg", deadline=time.time() + 5))
    headers = {key: value for key, value in wire.headers.items() if key != "deadline"}  # missing too
    with pytest.raises(ValidationError) as caught:
        from_wire(PredictRequest, wire.body, headers)
    assert [problem["type"] for problem in caught.value.errors()] == [NEWER_SCHEMA]
    error = refusal(caught.value, "the predict request")
    assert isinstance(error, NewerSchema) and isinstance(error, ServiceUnavailable)
    assert error.code == "unsupported_schema_version" and error.retryable
    assert "schema version 2" in error.message and "reads up to version 1" in error.message


def test_a_newer_json_message_is_refused_too() -> None:
    body = json.loads(encode(TrainRequest(job_id="j1")))
    with pytest.raises(ValidationError, match="TrainRequest of schema version 3"):
        decode(TrainRequest, json.dumps({**body, "schema_version": 3}).encode())
    assert decode(TrainRequest, json.dumps({**body, "schema_version": 1}).encode()).job_id == "j1"


def test_a_malformed_message_is_refused_with_what_is_wrong() -> None:
    wire = to_wire(request())
    with pytest.raises(ValidationError) as caught:
        from_wire(PredictRequest, wire.body, {**wire.headers, "deadline": "soon", "top_k": 0})
    error = refusal(caught.value, "the predict request")
    assert isinstance(error, BadRequest) and error.code == "bad_message"
    assert "deadline:" in error.message and "top_k:" in error.message
    as_server_fault = refusal(caught.value, "the worker's reply", malformed=DermaScanError)
    assert as_server_fault.status == 500 and as_server_fault.code == "bad_message"


def test_a_payload_message_whose_fields_a_header_cannot_hold_is_refused_at_the_sender() -> None:
    class Tagged(Message):
        PAYLOAD = "data"
        data: bytes = Field(description="The payload.")
        tags: list[str] = Field(description="Not a header value.")

    with pytest.raises(TypeError, match=r"Tagged\.tags is a list"):
        to_wire(Tagged(data=b"x", tags=["a"]))
