"""Per-caller rate limits and upload quotas: 429 with Retry-After, counted per token (or per
address without one), refilled as time passes."""

from __future__ import annotations

import asyncio
import math

import pytest

from gateway.ratelimit import Buckets
from tests.gateway.conftest import MakeClient
from tests.support.http import files_form, form
from tests.support.tokens import CONTRIBUTOR, OPERATOR

pytestmark = pytest.mark.timeout(60)


async def test_anonymous_predictions_are_limited_per_address(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False, predict_rate_per_s=0.01, predict_burst=2)
    statuses = [(await client.post("/predict", data=form(b"not an image"))).status for _ in range(2)]
    assert statuses == [400, 400]  # within the burst: answered on their merits
    limited = await client.post("/predict", data=form(b"not an image"))
    assert limited.status == 429
    error = (await limited.json())["error"]
    assert error["code"] == "rate_limited" and error["retryable"] and "0.01 a second" in error["message"]
    assert 1 <= int(limited.headers["Retry-After"]) <= 100  # one prediction's worth of refill


async def test_tokens_have_buckets_of_their_own(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False, open_predict=False, predict_rate_per_s=0.01,
                               predict_burst=1)
    assert (await client.post("/predict", data=form(b"text"), headers=OPERATOR)).status == 400
    limited = await client.post("/predict", data=form(b"text"), headers=OPERATOR)
    assert limited.status == 429 and "'operator'" in (await limited.json())["error"]["message"]
    assert (await client.post("/predict", data=form(b"text"), headers=CONTRIBUTOR)).status == 400


async def test_bulk_uploads_have_an_hourly_quota_per_token(make_client: MakeClient,
                                                           melanoma_jpeg: bytes) -> None:
    client = await make_client(with_worker=False, upload_bytes_per_hour=3 * len(melanoma_jpeg))
    first = await client.post("/upload-bulk", data=files_form([("melanoma_1.jpg", melanoma_jpeg)]),
                              headers=CONTRIBUTOR)
    assert first.status == 202, await first.text()
    second = await client.post("/upload-bulk", data=files_form([("melanoma_2.jpg", melanoma_jpeg)] * 2),
                               headers=CONTRIBUTOR)
    assert second.status == 429
    assert (await second.json())["error"]["code"] == "upload_quota"
    # what a quota of 3 images an hour refills while the client waits
    assert int(second.headers["Retry-After"]) > 60
    assert (await client.post("/upload-bulk", data=files_form([("melanoma_3.jpg", melanoma_jpeg)]),
                              headers=OPERATOR)).status == 202  # another token's quota is whole
    too_big = await client.post("/upload-bulk", data=files_form([("m.jpg", melanoma_jpeg)] * 4),
                                headers=OPERATOR)
    assert too_big.status == 413 and (await too_big.json())["error"]["code"] == "over_upload_quota"


async def test_abandoned_uploads_cost_only_the_bytes_they_sent(make_client: MakeClient) -> None:
    # The audit's reproduction: requests that announce most of the hour's quota, send ~100 bytes
    # and go away must not spend it.
    client = await make_client(with_worker=False, upload_bytes_per_hour=1_000_000)
    for _ in range(8):
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        writer.write(f"POST /upload-bulk HTTP/1.1\r\nHost: localhost\r\n"
                     f"Authorization: {CONTRIBUTOR['Authorization']}\r\n"
                     "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 900000\r\n\r\n"
                     '--b\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\n'
                     "\xff\xd8\xff".encode("latin-1") + b"\x00" * 100)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()
    await asyncio.sleep(0.2)
    upload = await client.post("/upload-bulk", data=files_form([("m.jpg", b"\x00" * 300_000)]),
                               headers=CONTRIBUTOR)
    assert upload.status == 202, await upload.text()
    # what did arrive is charged: 300 KB of the million are gone
    refused = await client.post("/upload-bulk", data=files_form([("m.jpg", b"\x00" * 750_000)]),
                                headers=CONTRIBUTOR)
    assert refused.status == 429 and (await refused.json())["error"]["code"] == "upload_quota"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_refills_at_its_rate_and_never_past_its_capacity() -> None:
    clock = Clock()
    buckets = Buckets(rate=2, capacity=4, clock=clock)
    assert [buckets.take("a") for _ in range(4)] == [0, 0, 0, 0]
    assert buckets.take("a") == pytest.approx(0.5)  # refused: half a second to the next one
    clock.now = 0.5
    assert buckets.take("a") == 0
    clock.now = 100
    assert [buckets.take("a") for _ in range(4)] == [0] * 4 and buckets.take("a") > 0
    assert buckets.take("b", 4) == 0 and buckets.take("c", 5) == math.inf


def test_a_rate_of_zero_is_no_limit_and_the_table_is_bounded() -> None:
    assert all(Buckets(rate=0, capacity=1).take("a") == 0 for _ in range(100))
    clock = Clock()
    buckets = Buckets(rate=1, capacity=1, clock=clock, max_callers=3)
    for key in "abcd":
        buckets.take(key)
    assert len(buckets._buckets) == 3 and "a" not in buckets._buckets
