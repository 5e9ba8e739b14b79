"""RabbitMQ behind a black hole, the gateway and a worker each their own process: no byte and no
close crosses the proxy, so nothing but a heartbeat can tell. The gateway says so within seconds
(/health, /readyz), answers 503 at once meanwhile, and serves again within 10 s of the network's
return, though the connections that went silent never carry a byte again."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.conftest import TEST_PREFIX
from tests.support.cluster import Cluster, cluster_env
from tests.support.http import form
from tests.support.processes import wait_http
from tests.support.tcp import Proxy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
HEARTBEAT_S = 2  # DERMASCAN_BROKER_HEARTBEAT_S: the services' AMQP heartbeat and probe pace
HOLE_S = 6.0  # longer than the broker's own wait for a silent client, as a real outage would be


@pytest_asyncio.fixture
async def cluster(rabbit_url: str, s3_endpoint: str, tmp_path: Path,
                  tiny_model_dir: Path) -> AsyncIterator[dict[str, Any]]:
    """A gateway and one inference worker reaching RabbitMQ through `proxy` (a cluster of this
    test's own: it cuts the broker)."""
    proxy = Proxy.before(rabbit_url)
    await proxy.up()
    env = {**cluster_env(proxy.reroute(rabbit_url), s3_endpoint, f"{TEST_PREFIX}{uuid.uuid4().hex[:6]}",
                         tmp_path, tiny_model_dir),
           "DERMASCAN_BROKER_HEARTBEAT_S": str(HEARTBEAT_S)}
    cluster = Cluster(env, tmp_path)
    try:
        for module in ("gateway", "inference_worker"):
            cluster.start(module)
        await asyncio.to_thread(wait_http, f"{cluster.base}/readyz", timeout=90)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            yield {"base": cluster.base, "proxy": proxy, "session": session}
    finally:
        await asyncio.to_thread(cluster.close)
        await proxy.close()


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float) -> float:
    """Seconds until the coroutine function `condition()` returned true; fails after `timeout`."""
    started = time.monotonic()
    while not await condition():
        assert time.monotonic() - started < timeout, f"not within {timeout} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_a_blackholed_broker_is_reported_within_seconds_and_the_gateway_is_ready_10_s_after_it_returns(
        cluster: dict[str, Any], melanoma_jpeg: bytes) -> None:
    base, proxy = cluster["base"], cluster["proxy"]
    session: aiohttp.ClientSession = cluster["session"]

    async def connected() -> bool:
        async with session.get(f"{base}/health") as response:
            return bool((await response.json())["broker"]["connected"])

    async def ready() -> bool:
        async with session.get(f"{base}/readyz") as response:
            return response.status == 200

    async def predict() -> tuple[int, str | None, float]:
        started = time.monotonic()
        async with session.post(f"{base}/predict", data=form(melanoma_jpeg)) as response:
            body = await response.json()
            code = body["error"]["code"] if response.status != 200 else None
            return response.status, code, time.monotonic() - started

    assert (await predict())[0] == 200
    proxy.blackhole()
    noticed = await _until(lambda: _not(connected), timeout=2 * HEARTBEAT_S + 1)
    assert not await ready()
    status, code, took = await predict()
    assert (status, code) == (503, "broker_unavailable") and took < 1, (status, code, took)
    await asyncio.sleep(max(0.0, HOLE_S - noticed))

    await proxy.up()
    back = await _until(ready, timeout=10)
    status, _, _ = await predict()
    assert status == 200
    print(f"black hole noticed after {noticed:.1f} s; ready {back:.1f} s after the network returned")


async def _not(condition: Callable[[], Awaitable[bool]]) -> bool:
    return not await condition()
