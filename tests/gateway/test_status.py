"""`GET /status`: what the UI's Status section shows."""

from __future__ import annotations

import asyncio

import pytest

from gateway.keys import BUS
from gateway.settings import GatewaySettings
from shared.bus import QueueStats
from shared.taxonomy import CLASSES
from tests.gateway.conftest import MakeClient

pytestmark = pytest.mark.timeout(60)


async def test_status_names_workers_with_their_engine_every_queue_and_the_classes(
        make_client: MakeClient) -> None:
    client = await make_client(grafana_url="https://grafana.example.org/d/dermascan")
    body = await (await client.get("/status")).json()
    assert body["status"] == "ok" and body["broker_connected"] and body["store_reachable"]
    [worker] = body["workers"]
    assert worker["model_version"] == "tiny-v1" and worker["engine"] in ("litert", "tensorflow")
    assert 0 <= worker["uptime_s"] < 60 and worker["heard_s_ago"] < 5
    assert [q["role"] for q in body["queues"]] == ["predict", "ingest", "train"]
    assert body["queues"][0]["consumers"] == 1 and body["queues"][0]["messages"] == 0
    classes = body["classes"]
    assert classes["model_version"] == "tiny-v1"
    assert sorted(classes["predicted"] + classes["needs_data"]) == sorted(CLASSES)
    assert "melanoma" in classes["predicted"] and "eczema" in classes["needs_data"]
    assert body["grafana_url"] == "https://grafana.example.org/d/dermascan"
    assert body["gateway_uptime_s"] > 0


async def test_without_workers_the_status_is_degraded_and_says_so(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False)
    body = await (await client.get("/status")).json()
    assert body["status"] == "degraded" and body["workers"] == [] and body["grafana_url"] is None


@pytest.mark.parametrize("url", ["javascript:alert(1)", "grafana.local:3000", "ftp://grafana"])
def test_the_grafana_link_must_be_an_http_url(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        GatewaySettings(grafana_url=url)


async def test_the_queues_are_asked_about_once_however_often_status_is_read(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False)
    bus = client.app[BUS]
    asked: list[str] = []
    queue_stats = bus.queue_stats

    async def counted(queue: str) -> QueueStats:
        asked.append(queue)
        return await queue_stats(queue)

    bus.queue_stats = counted  # type: ignore[method-assign]
    bodies = await asyncio.gather(*[client.get("/status") for _ in range(10)])
    assert [b.status for b in bodies] == [200] * 10
    assert len(asked) <= 2 * 3  # one sample of the three queues serves every request of a second
    assert all(q["consumers"] is not None for q in (await bodies[0].json())["queues"])
