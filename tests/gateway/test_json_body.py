"""The JSON bodies of `POST /retrain`, `POST /models/{version}/promote` and
`POST /models/rollback` are read with JSON's own types, as the OpenAPI document declares them:
a boolean sent as 0 or "true", an integer sent as "30" or 30.5, is a 422 naming the field, and
nothing is done. An integer written 30.0 is the integer 30 (JSON Schema's reading)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway.conftest import MakeClient
from tests.support.tokens import OPERATOR

pytestmark = pytest.mark.timeout(60)
JSON = {**OPERATOR, "Content-Type": "application/json"}


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/retrain", {"promote": 0}, "promote"),
    ("/retrain", {"fine_tune": "true"}, "fine_tune"),
    ("/retrain", {"epochs": "30"}, "epochs"),
    ("/retrain", {"epochs": 30.5}, "epochs"),
    ("/retrain", {"epochs": True}, "epochs"),
    ("/retrain", {"max_minutes": "5"}, "max_minutes"),
    ("/models/tiny-v1/promote", {"force": 1, "reason": "the gate is wrong here"}, "force"),
    ("/models/tiny-v1/promote", {"reason": 123}, "reason"),
])
async def test_a_value_of_another_json_type_is_a_422_naming_the_field(
        make_client: MakeClient, path: str, body: dict[str, Any], field: str) -> None:
    client = await make_client(with_worker=False)
    response = await client.post(path, json=body, headers=OPERATOR)
    assert response.status == 422, await response.text()
    error = (await response.json())["error"]
    assert error["code"] == "invalid_options" and f"{field}: Input should be a valid" in error["message"]
    if path == "/retrain":  # nothing was queued: the trainer is free for a valid request
        assert (await client.post("/retrain", json={"epochs": 2}, headers=OPERATOR)).status == 202


async def test_an_integer_written_with_a_zero_fraction_is_that_integer(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False)
    response = await client.post("/retrain", data=b'{"epochs": 30.0, "max_minutes": 5}', headers=JSON)
    assert response.status == 202, await response.text()
    job = await (await client.get(f"/jobs/{(await response.json())['job_id']}")).json()
    assert '"epochs":30,' in job["log"][0] and '"max_minutes":5.0' in job["log"][0]


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"max_minutes": 1e400}', "out of range"),
    (b'{"max_minutes": Infinity}', "Infinity is not JSON"),
    (b'{"epochs": NaN}', "NaN is not JSON"),
    (b'{"epochs": 1' + b"0" * 5000 + b"}", "thousands of digits"),
    (b"[" * 20_000, "nested too deeply"),
    (b'{"epochs": 3', "not JSON: Expecting ',' delimiter at line 1 column 13"),
    (b'\xff{"epochs": 3}', "not UTF-8"),
])
async def test_a_body_that_is_not_json_is_a_422_that_says_why(
        make_client: MakeClient, body: bytes, reason: str) -> None:
    client = await make_client(with_worker=False)
    response = await client.post("/retrain", data=body, headers=JSON)
    assert response.status == 422, await response.text()
    error = (await response.json())["error"]
    assert error["code"] == "invalid_options" and reason in error["message"], error
