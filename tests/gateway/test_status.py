"""`GET /status`: what the UI's Status section shows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from gateway.keys import BUS
from gateway.settings import GatewaySettings
from shared.bus import QueueStats
from shared.heartbeat import Heartbeat
from shared.messages import ServiceStatus
from shared.taxonomy import CLASSES
from tests.gateway.conftest import Client, MakeClient

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


Seen = list[dict[str, Any]]


async def services_seen(client: Client, until: Callable[[Seen], bool]) -> Seen:
    """`/status`'s services once `until` holds of them (or after 5 s, as they are then)."""
    for _ in range(100):
        services: Seen = (await (await client.get("/status")).json())["services"]
        if until(services):
            break
        await asyncio.sleep(0.05)
    return services


async def test_the_ingest_and_trainer_services_are_listed_with_their_uptime_once_they_beat(
        make_client: MakeClient) -> None:
    client = await make_client(with_jobs=True)
    services = await services_seen(client, lambda seen: len(seen) == 2)
    assert [s["service"] for s in services] == ["ingest_service", "trainer_service"]
    for service in services:
        assert service["id"] and 0 <= service["uptime_s"] < 60 and 0 <= service["heard_s_ago"] < 5


async def test_an_instance_that_stops_beating_is_dropped_and_the_others_stay(make_client: MakeClient) -> None:
    client = await make_client(with_jobs=True)
    started = time.time() - 120  # a second ingest instance, up for two minutes already
    second = Heartbeat(client.app[BUS], "dermascan.status", lambda: ServiceStatus(
        service="ingest_service", instance_id="ingest-2", started_at=started, interval_s=0.1), 0.1)
    second.start()
    try:
        services = await services_seen(client, lambda seen: len(seen) == 3)
        assert [s["service"] for s in services] == ["ingest_service", "ingest_service", "trainer_service"]
        assert "ingest-2" in [s["id"] for s in services[:2]]
        assert [s["uptime_s"] >= 120 for s in services if s["id"] == "ingest-2"] == [True]
    finally:
        await second.stop()
    assert not second.running
    services = await services_seen(client, lambda seen: len(seen) == 2)  # gone after 3 silent intervals
    assert [s["service"] for s in services] == ["ingest_service", "trainer_service"]
    assert "ingest-2" not in [s["id"] for s in services]


async def test_without_the_job_services_none_is_listed(make_client: MakeClient) -> None:
    client = await make_client()
    body = await (await client.get("/status")).json()
    assert body["services"] == [] and len(body["workers"]) == 1
