"""S3 goes away mid-ingest (real RabbitMQ, real S3 server behind a TCP proxy the test cuts or
freezes): an upload already answered 202 is retried and requeued, never dead-lettered, and ends
stored; both outages are counted into docs/reliability.md."""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

import pytest

from shared.bus import connect_bus
from shared.store import S3Timeouts, open_store
from tests.ingest_service.conftest import MakeIngest, noise_images, result_of
from tests.support.reliability import Scenario, lost_images, scenario
from tests.support.tcp import Proxy

pytestmark = pytest.mark.timeout(90)
OUTAGES = {"refused": "S3 refused during an upload's ingest",
           "blackholed": "S3 blackholed during an upload's ingest"}


@pytest.mark.parametrize("outage", list(OUTAGES))
async def test_s3_down_mid_ingest_requeues_the_job_and_every_file_ends_stored(
        make_ingest: MakeIngest, s3_endpoint: str, rabbit_url: str, unique: str, outage: str) -> None:
    with scenario(OUTAGES[outage]) as counts:
        await _ride_out(outage, counts, make_ingest, s3_endpoint, rabbit_url, unique)


async def _ride_out(outage: str, counts: Scenario, make_ingest: MakeIngest, s3_endpoint: str, rabbit_url: str,
                    unique: str) -> None:
    direct = await open_store(f"s3://{unique}", endpoint_url=s3_endpoint)
    moto = urlparse(s3_endpoint)
    proxy = Proxy((moto.hostname or "127.0.0.1", moto.port or 80))
    await proxy.up()
    # one try a call: the outage meets the ingest's own retries, which this test is about. With
    # botocore's retry (a wait of up to 2 s) one call once started late in the outage, slept past
    # its end and succeeded, so the job was never requeued (make test, load 5)
    proxied = await open_store(f"s3://{unique}", endpoint_url=f"http://127.0.0.1:{proxy.port}",
                               timeouts=S3Timeouts(max_attempts=1))
    bus = await connect_bus(rabbit_url)  # closed by make_ingest, after the service stops
    try:
        ingest = await make_ingest(store=proxied, bus=bus, ingest_queue=f"{unique}.ingest", store_retry_s=1.0,
                                   store_retry_first_s=0.2, max_attempts=8)
        ingest.store = direct  # the test's own connection (the gateway's), which the outage spares
        files = noise_images(30)
        job_id = await ingest.submit(files)  # what the gateway does before it answers 202
        counts.answer(202)
        counts.accept_upload(len(files))
        for _ in range(400):  # cut S3 once the job has stored its first image
            if await direct.list("images/"):
                break
            await asyncio.sleep(0.02)
        if outage == "refused":
            await proxy.down()
        else:
            proxy.freeze()  # connections stay open, nothing comes back: each call waits out its timeouts
        await asyncio.sleep(4.0)  # longer than one attempt's retry budget
        await proxy.up()
        job = await ingest.wait(job_id, timeout=60)
        outcomes = [o.model_dump(mode="json") for o in result_of(job).files]  # as GET /jobs/{id} shows them
        counts.lost = await lost_images(direct, outcomes, sent=len(files))
        counts.notes.append(f"S3 {outage} for 4 s mid-ingest of 30 images: {job.progress['attempts']} "
                            f"attempts, {ingest.metric('requeues_total'):.0f} requeues, ends {job.state}")

        assert job.state == "succeeded", job.error
        if outage == "refused":  # refused calls fail fast: retried, then the job requeued. A blackholed
            # call waits out its S3 timeouts; whether the job is requeued depends on when the proxy thaws.
            assert job.progress["attempts"] >= 2, "the outage outlasted an attempt: the job was requeued"
            assert ingest.metric("requeues_total") >= 1
            assert ingest.metric("store_retries_total", operation="get") + \
                ingest.metric("store_retries_total", operation="put") >= 1
        assert result_of(job).stored == 30
        assert sorted(o["index"] for o in outcomes) == list(range(30)), "each file once"
        assert len(await direct.list("images/")) == 30
        for _ in range(100):  # staged uploads go right after the final record is saved
            if not await direct.list(f"uploads/{job_id}/"):
                break
            await asyncio.sleep(0.05)
        assert await direct.list(f"uploads/{job_id}/") == []
        assert (await bus.queue_stats(f"{unique}.ingest.dead")).messages == 0, "nothing dead-lettered"
    finally:
        await proxied.close()
        await direct.close()
        await proxy.close()
