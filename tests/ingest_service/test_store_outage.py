"""S3 goes away mid-ingest (real RabbitMQ, real S3 server behind a TCP proxy the test cuts): an
upload already answered 202 is retried and requeued, never dead-lettered, and ends stored."""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

import pytest

from shared.bus import connect_bus
from shared.store import open_store
from tests.ingest_service.conftest import MakeIngest, noise_images
from tests.support.tcp import Proxy

pytestmark = pytest.mark.timeout(90)


async def test_s3_down_mid_ingest_requeues_the_job_and_every_file_ends_stored(
        make_ingest: MakeIngest, s3_endpoint: str, rabbit_url: str, unique: str) -> None:
    direct = await open_store(f"s3://{unique}", endpoint_url=s3_endpoint)
    moto = urlparse(s3_endpoint)
    proxy = Proxy((moto.hostname or "127.0.0.1", moto.port or 80))
    await proxy.up()
    proxied = await open_store(f"s3://{unique}", endpoint_url=f"http://127.0.0.1:{proxy.port}")
    bus = await connect_bus(rabbit_url)  # closed by make_ingest, after the service stops
    try:
        ingest = await make_ingest(store=proxied, bus=bus, ingest_queue=f"{unique}.ingest", store_retry_s=1.0,
                                   store_retry_first_s=0.2, max_attempts=8)
        ingest.store = direct  # the test's own connection (the gateway's), which the outage spares
        files = noise_images(30)
        job_id = await ingest.submit(files)
        for _ in range(400):  # cut S3 once the job has stored its first image
            if await direct.list("images/"):
                break
            await asyncio.sleep(0.02)
        await proxy.down()
        await asyncio.sleep(4.0)  # longer than one attempt's retry budget
        await proxy.up()
        job = await ingest.wait(job_id, timeout=60)

        assert job.state == "succeeded", job.error
        assert job.progress["attempts"] >= 2, "the outage outlasted an attempt: the job was requeued"
        assert ingest.metric("requeues_total") >= 1
        assert ingest.metric("store_retries_total", operation="get") + \
            ingest.metric("store_retries_total", operation="put") >= 1
        assert job.result is not None and job.result["stored"] == 30
        assert sorted(o["index"] for o in job.result["files"]) == list(range(30)), "each file once"
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
