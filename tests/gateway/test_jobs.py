"""`DELETE /jobs/{id}` as an operator sees it: a training job is cancelled and its record stays
readable; an upload cannot be cancelled (409, the job's state forbids it, as for a job that is
over), nor an unknown id found (404)."""

from __future__ import annotations

import pytest

from tests.gateway.conftest import MakeClient
from tests.support.http import files_form
from tests.support.tokens import CONTRIBUTOR, OPERATOR

pytestmark = pytest.mark.timeout(60)


async def test_cancelling_a_training_job_keeps_its_record_readable(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False)  # no trainer: the job stays queued
    job_id = (await (await client.post("/retrain", headers=OPERATOR)).json())["job_id"]
    cancelled = await client.delete(f"/jobs/{job_id}", headers=OPERATOR)
    assert cancelled.status == 200 and (await cancelled.json())["state"] == "cancelled"
    read = await client.get(f"/jobs/{job_id}")
    assert read.status == 200 and (await read.json())["state"] == "cancelled"
    again = await client.delete(f"/jobs/{job_id}", headers=OPERATOR)
    assert again.status == 409 and (await again.json())["error"]["code"] == "job_over"


async def test_an_upload_cannot_be_cancelled_and_an_unknown_job_is_not_found(
        make_client: MakeClient, melanoma_jpeg: bytes) -> None:
    client = await make_client(with_worker=False)  # no ingest service: the upload stays queued
    accepted = await client.post("/upload-bulk", data=files_form([("melanoma_1.jpg", melanoma_jpeg)]),
                                 headers=CONTRIBUTOR)
    job_id = (await accepted.json())["job_id"]
    refused = await client.delete(f"/jobs/{job_id}", headers=OPERATOR)
    assert refused.status == 409, await refused.text()
    error = (await refused.json())["error"]
    assert error["code"] == "not_cancellable" and "upload" in error["message"]
    assert (await (await client.get(f"/jobs/{job_id}")).json())["state"] == "queued"
    assert (await client.delete("/jobs/0123456789abcdef", headers=OPERATOR)).status == 404
