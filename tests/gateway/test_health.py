"""`/health`, `/readyz`, `/classes` and `/metrics` as an operator reads them."""

from __future__ import annotations

import pytest

from shared.taxonomy import CLASSES
from tests.gateway.conftest import MakeClient

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
