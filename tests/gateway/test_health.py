"""`/health`, `/readyz`, `/classes` and `/metrics` as an operator reads them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.settings import GatewaySettings
from shared.bus import connect_bus
from shared.store import open_store
from shared.taxonomy import CLASSES
from tests.gateway.conftest import MakeClient
from tests.support.tcp import Proxy

pytestmark = pytest.mark.timeout(60)


async def test_health_reports_dependencies_workers_and_models(make_client: MakeClient) -> None:
    client = await make_client()
    body = await (await client.get("/health")).json()
    assert body["status"] == "ok"
    assert body["broker"]["connected"] and body["store"]["reachable"]
    assert body["model_versions"] == ["tiny-v1"]
    assert body["broker"]["predict_queue"]["consumers"] == 1
    assert body["classes"] == list(CLASSES)
    assert body["uptime_s"] > 0


async def test_classes_lists_the_taxonomy_and_what_the_model_predicts(make_client: MakeClient) -> None:
    client = await make_client()
    body = await (await client.get("/classes")).json()
    assert body["taxonomy"] == list(CLASSES)
    assert body["model_version"] == "tiny-v1"
    assert set(body["predicted"]) | set(body["not_yet_predicted"]) == set(CLASSES)


async def test_metrics_count_requests_by_route_and_status(make_client: MakeClient) -> None:
    client = await make_client()
    await client.get("/classes")
    text = await (await client.get("/metrics")).text()
    assert 'dermascan_gateway_requests_total{method="GET",route="/classes",status="200"} 1.0' in text
    assert "dermascan_gateway_uptime_seconds" in text


async def test_during_a_broker_outage_health_is_degraded_and_not_ready_until_it_is_back(
        rabbit_url: str, tmp_path: Path) -> None:
    proxy = Proxy.before(rabbit_url)
    await proxy.up()
    bus = await connect_bus(proxy.reroute(rabbit_url))
    client = TestClient(TestServer(create_app(GatewaySettings(store_url=tmp_path.as_uri()), bus=bus,
                                              store=await open_store(tmp_path.as_uri()))))
    await client.start_server()
    try:
        assert (await (await client.get("/health")).json())["broker"]["connected"] is True
        await proxy.down()
        for _ in range(60):
            body = await (await client.get("/health")).json()
            if not body["broker"]["connected"]:
                break
            await asyncio.sleep(0.05)
        assert body["status"] == "degraded" and body["broker"] == {"connected": False, "predict_queue": None}
        ready = await client.get("/readyz")
        assert ready.status == 503 and "broker unreachable" in (await ready.json())["problems"]
        await proxy.up()
        for _ in range(150):  # aio-pika reconnects every 5 s
            if (await (await client.get("/health")).json())["broker"]["connected"]:
                break
            await asyncio.sleep(0.1)
        assert (await (await client.get("/health")).json())["broker"]["connected"] is True
    finally:
        await client.close()
        await bus.close()
        await proxy.close()
