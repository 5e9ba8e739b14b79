"""Bad requests get a 4xx with a reason, never a 500; a 500 says only "internal error" and a
request id that is in the log."""

from __future__ import annotations

import logging

import pytest

from gateway.keys import REGISTRY
from shared.manifest import ModelManifest
from tests.gateway.conftest import MakeClient
from tests.support.tokens import CONTRIBUTOR, OPERATOR

pytestmark = pytest.mark.timeout(60)

_FORM = "multipart/form-data; boundary=abc"
_PART = (b'--abc\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n\r\n'
         b'\xff\xd8\xffdata\r\n--abc--\r\n')
MALFORMED = {
    "no boundary": ("multipart/form-data", _PART),
    "another boundary": (_FORM, _PART.replace(b"--abc", b"--zzz")),
    "a NUL in a file name": (_FORM, _PART.replace(b"x.jpg", b"x\x00.jpg")),
    "cut short": (_FORM, _PART[:-12]),
    "headers without an end": (_FORM, b'--abc\r\nContent-Disposition: form-data; name="file"'),
}


@pytest.mark.parametrize("case", MALFORMED)
@pytest.mark.parametrize("path", ["/predict", "/upload-bulk"])
async def test_malformed_multipart_is_a_400_with_a_reason(make_client: MakeClient, path: str,
                                                          case: str) -> None:
    client = await make_client(with_worker=False)
    content_type, body = MALFORMED[case]
    if path == "/upload-bulk":  # its own field: an unknown one would be refused as such (422)
        body = body.replace(b'name="file"', b'name="files"')
    response = await client.post(path, data=body, headers={"Content-Type": content_type, **CONTRIBUTOR})
    assert response.status == 400, await response.text()
    error = (await response.json())["error"]
    assert error["code"] == "malformed_multipart" and "multipart body is malformed" in error["message"]
    assert "boundary b'" not in error["message"]  # the parser's own words stay in the gateway


async def test_a_control_character_in_an_encoded_file_name_is_dropped(make_client: MakeClient,
                                                                      melanoma_jpeg: bytes) -> None:
    client = await make_client(with_worker=False)
    body = (b'--abc\r\nContent-Disposition: form-data; name="files"; filename="melanoma%00_1.jpg"\r\n\r\n'
            + melanoma_jpeg + b"\r\n--abc--\r\n")
    response = await client.post("/upload-bulk", data=body, headers={"Content-Type": _FORM, **CONTRIBUTOR})
    assert response.status == 202, await response.text()


@pytest.mark.parametrize("top_k", ["abc", "0", "-1", "15", "1e3", "3.0", "９"])
async def test_a_bad_top_k_is_a_400(make_client: MakeClient, top_k: str) -> None:
    client = await make_client(with_worker=False)
    response = await client.post("/predict", params={"top_k": top_k}, data=_PART,
                                 headers={"Content-Type": _FORM})
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "invalid_top_k" and "from 1 to 14" in error["message"]


@pytest.mark.parametrize("version",
                         ["current.json", "history.json", "a%00b", ".hidden", "-x", "a%2Fb", "x" * 200])
async def test_a_name_that_is_no_version_is_a_400(make_client: MakeClient, version: str) -> None:
    client = await make_client(with_worker=False)
    response = await client.post(f"/models/{version}/promote", headers=OPERATOR)
    assert response.status == 400, await response.text()
    assert (await response.json())["error"]["code"] == "invalid_version"


async def test_an_unknown_version_is_still_a_404(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False)
    response = await client.post("/models/v20990101-000000/promote", headers=OPERATOR)
    assert response.status == 404


async def test_a_422_names_the_field_but_does_not_echo_the_input(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False)
    junk = "x" * 60_000
    response = await client.post("/retrain", json={"epochs": junk, "max_balanced_accuracy_drop": 1},
                                 headers=OPERATOR)
    assert response.status == 422
    text = await response.text()
    assert len(text) < 1000 and "xxxxxxxxxx" not in text
    message = (await response.json())["error"]["message"]
    assert "epochs: Input should be a valid integer" in message
    assert "max_balanced_accuracy_drop: Extra inputs are not permitted" in message


async def test_a_json_body_over_64_kib_is_a_413_unread(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False)
    response = await client.post("/retrain", json={"epochs": "x" * 1_000_000}, headers=OPERATOR)
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "body_too_large"
    assert len(await response.text()) < 500


async def test_a_500_says_internal_error_and_a_request_id_that_is_in_the_log(
        make_client: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    client = await make_client(with_worker=False)

    async def broken(*_: object) -> list[ModelManifest]:
        raise RuntimeError("secret detail: /srv/store/credentials.json")

    # replacing a method on the instance is the point: the registry fails as a broken store would
    client.app[REGISTRY].versions_page = broken  # type: ignore[method-assign,assignment]
    with caplog.at_level(logging.ERROR, logger="gateway.errors"):
        response = await client.get("/models")
    assert response.status == 500
    body = await response.json()
    request_id = response.headers["X-Request-Id"]
    assert body == {"error": {"code": "internal_error",
                              "message": f"internal error (request id {request_id})",
                              "retryable": False}}
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None and "secret detail" in str(logged[0].exc_info[1])


async def test_every_error_says_whether_to_retry(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False, predict_rate_per_s=0.001, predict_burst=1)
    text = _PART.replace(b"\xff\xd8\xff", b"just text, ")
    first = await client.post("/predict", data=text, headers={"Content-Type": _FORM})
    assert (await first.json())["error"]["retryable"] is False  # a 400: the same request fails again
    second = await client.post("/predict", data=text, headers={"Content-Type": _FORM})
    assert second.status == 429 and (await second.json())["error"]["retryable"] is True
