"""Faults under load, every service its own process on real RabbitMQ (behind a TCP proxy the test
cuts) and the S3 server: a worker killed with kill -9, RabbitMQ gone during predictions and during
an upload. Each is counted into docs/reliability.md: no 500, nothing hung, no accepted image lost."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from shared.store import open_store
from tests.conftest import FIXTURES, TEST_PREFIX
from tests.support.cluster import Cluster, cluster_env
from tests.support.http import files_form, form
from tests.support.processes import wait_http
from tests.support.reliability import Scenario, lost_images, scenario
from tests.support.tcp import Proxy
from tests.support.tokens import CONTRIBUTOR

# One cluster for the module (its start is most of the cost); the worker is killed last.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.asyncio(loop_scope="module")]
IMAGES = sorted([*(FIXTURES / "ham10000").rglob("*.jpg"), *(FIXTURES / "isic2017").rglob("*.jpg")])
OUTAGE_S = 3.0
STALE_S = 2.0  # DERMASCAN_JOB_STALE_S: shorter than OUTAGE_S


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(rabbit_url: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory,
                  tiny_model_dir: Path) -> AsyncIterator[dict[str, Any]]:
    """Gateway, two inference workers and the ingest service, all reaching RabbitMQ through
    `proxy`. Process start and stop run in threads: the proxy lives on this module's loop."""
    unique, tmp_path = f"{TEST_PREFIX}{uuid.uuid4().hex[:6]}", tmp_path_factory.mktemp("faults")
    proxy = Proxy.before(rabbit_url)
    await proxy.up()
    # Staleness shorter than the upload's outage (the cut plus aio-pika's 5 s reconnect): the gateway
    # reports the paused upload `worker_lost`, and the redelivered job must resume it.
    env = {**cluster_env(proxy.reroute(rabbit_url), s3_endpoint, unique, tmp_path, tiny_model_dir),
           "DERMASCAN_JOB_STALE_S": str(STALE_S)}
    cluster = Cluster(env, tmp_path)
    base = cluster.base
    try:
        cluster.start("gateway")
        cluster.start("ingest_service", name="ingest")
        for n in "ab":
            cluster.start("inference_worker", name=f"worker-{n}", DERMASCAN_WORKER_ID=n,
                          DERMASCAN_INTRA_OP_THREADS="1")
        procs = cluster.procs
        await asyncio.to_thread(wait_http, f"{base}/readyz", timeout=120, proc=procs["worker-b"])
        async with aiohttp.ClientSession() as session:
            for _ in range(600):  # both workers consuming
                async with session.get(f"{base}/health") as response:
                    queue = (await response.json())["broker"]["predict_queue"] or {}
                if queue.get("consumers") == 2:
                    break
                await asyncio.sleep(0.2)
            yield {"base": base, "procs": procs, "proxy": proxy, "session": session,
                   "store": f"s3://{unique}", "s3": s3_endpoint}
    finally:
        await asyncio.to_thread(cluster.close)
        await proxy.close()


class Load:
    """`clients` callers predicting in a loop until `stop()`; a caller that is refused waits 0.1 s
    (a client's back-off) before it asks again. Every answer is counted into `counts`."""

    def __init__(self, cluster: dict[str, Any], counts: Scenario, image: bytes, clients: int = 4) -> None:
        self.cluster, self.counts, self.image = cluster, counts, image
        self.statuses: list[tuple[float, int | None]] = []  # (when it was sent, its answer), by answer
        self._stopping = False
        self._tasks = [asyncio.create_task(self._client()) for _ in range(clients)]

    async def _client(self) -> None:
        while not self._stopping:
            sent = time.monotonic()
            status, _ = await self.counts.call(self.cluster["session"], "POST",
                                               f"{self.cluster['base']}/predict", data=form(self.image),
                                               timeout=20)
            self.statuses.append((sent, status))
            if status != 200:
                await asyncio.sleep(0.1)

    async def until_answered(self, after: float, timeout: float = 30) -> float:
        """Seconds from `after` until a prediction sent after it was answered 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(at > after and status == 200 for at, status in self.statuses[-20:]):
                return time.monotonic() - after
            await asyncio.sleep(0.1)
        raise AssertionError(f"no prediction answered within {timeout} s: {self.statuses[-5:]}")

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(*self._tasks)


async def test_rabbitmq_cut_under_predict_load_is_503_and_serving_comes_back(
        cluster: dict[str, Any], melanoma_jpeg: bytes) -> None:
    proxy: Proxy = cluster["proxy"]
    with scenario("RabbitMQ cut during predict load") as counts:
        load = Load(cluster, counts, melanoma_jpeg)
        await asyncio.sleep(2.0)
        await proxy.down()
        await asyncio.sleep(OUTAGE_S)
        await proxy.up()
        back = time.monotonic()
        recovered = await load.until_answered(back)
        await asyncio.sleep(2.0)
        await load.stop()
        counts.notes.append(f"4 clients; RabbitMQ refused for {OUTAGE_S:.0f} s; predictions answered again "
                            f"{recovered:.1f} s after it was back (aio-pika reconnects every 5 s)")
        assert counts.errors(allowed=["503 broker_unavailable", "504"]) == {}, counts.answers
        assert counts.answers["503 broker_unavailable"] > 0, "the outage was answered honestly"
        settled = [status for sent, status in load.statuses if sent > back + recovered + 1.0]
        assert settled and set(settled) == {200}, settled  # sent a second after serving came back: all 200
        assert all(p.poll() is None for p in cluster["procs"].values()), "no service died"


async def test_rabbitmq_cut_during_an_upload_loses_no_accepted_image(cluster: dict[str, Any]) -> None:
    proxy: Proxy = cluster["proxy"]
    session: aiohttp.ClientSession = cluster["session"]
    base = cluster["base"]
    files = [(f"{p.parent.name}_{p.name}", p.read_bytes()) for p in IMAGES]
    store = await open_store(cluster["store"], endpoint_url=cluster["s3"])
    accepted: list[str] = []
    try:
        with scenario("RabbitMQ cut during an upload") as counts:
            async def upload(batch: list[tuple[str, bytes]]) -> None:
                status, body = await counts.call(session, "POST", f"{base}/upload-bulk",
                                                 data=files_form(batch), headers=CONTRIBUTOR, timeout=60)
                if status == 202:
                    accepted.append(body["job_id"])
                    counts.accept_upload(len(batch))

            await upload(files[:30])
            for _ in range(400):  # cut the broker once the ingest has stored its first image
                if await store.list("images/"):
                    break
                await asyncio.sleep(0.02)
            await proxy.down()
            stored_at_cut = len(await store.list("images/"))
            await upload(files[30:])  # during the outage: accepted (and then kept) or refused honestly
            await asyncio.sleep(OUTAGE_S)
            await proxy.up()
            polled: list[list[str]] = [[] for _ in accepted]
            jobs = [await final_job(counts, session, f"{base}/jobs/{job_id}", seen=seen)
                    for job_id, seen in zip(accepted, polled, strict=True)]
            for job, batch_size in zip(jobs, (30, len(files) - 30), strict=False):
                outcomes = job["result"]["files"]
                counts.lost += await lost_images(store, outcomes, sent=batch_size)
            counts.notes.append(f"RabbitMQ refused for {OUTAGE_S:.0f} s with {stored_at_cut}/30 images of "
                                f"the first upload stored, DERMASCAN_JOB_STALE_S={STALE_S:.0f}; the first "
                                f"upload was polled {' -> '.join(polled[0])}; the upload sent during the "
                                f"outage: {'accepted' if len(accepted) > 1 else 'refused'}; jobs ended "
                                + ", ".join(job["state"] for job in jobs))
            assert counts.errors(allowed=["503 broker_unavailable"]) == {}, counts.answers
            assert [job["state"] for job in jobs] == ["succeeded"] * len(jobs), [j.get("error") for j in jobs]
            assert stored_at_cut < 30, "the cut came while the first upload was being ingested"
            assert "failed worker_lost" in polled[0], f"the outage outlasted the staleness: {polled[0]}"
            assert any("resumed: " in line for line in jobs[0]["log"]), jobs[0]["log"]
    finally:
        await store.close()


async def test_a_worker_killed_under_load_loses_no_request(cluster: dict[str, Any],
                                                           melanoma_jpeg: bytes) -> None:
    with scenario("kill -9 an inference worker under predict load") as counts:
        load = Load(cluster, counts, melanoma_jpeg)
        await asyncio.sleep(2.0)
        cluster["procs"]["worker-a"].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await asyncio.sleep(5.0)
        await load.stop()
        after = sum(at > killed for at, _ in load.statuses)
        counts.notes.append(f"4 clients, 2 workers, one killed; {after} sent after it, all answered")
        assert counts.errors() == {}, counts.answers  # what the dead worker held was redelivered
        assert cluster["procs"]["worker-b"].poll() is None and cluster["procs"]["gateway"].poll() is None


async def final_job(counts: Scenario, session: aiohttp.ClientSession, url: str, timeout: float = 90,
                    seen: list[str] | None = None) -> Any:
    """The job once it is final (each poll counted), polling on past `failed` with `worker_lost`,
    which an ingest job may resume from (README, Jobs). `seen` gets each state polled, once per
    change (`failed worker_lost` for that one)."""
    deadline = time.monotonic() + timeout
    job: Any = None
    while time.monotonic() < deadline:
        status, job = await counts.call(session, "GET", url, timeout=20)
        if status == 200:
            state = " ".join([job["state"], *([job["error"]["code"]] if job.get("error") else [])])
            if seen is not None and (not seen or seen[-1] != state):
                seen.append(state)
            if job["state"] not in ("queued", "running") and state != "failed worker_lost":
                return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"{url} not final after {timeout} s: {job}")
