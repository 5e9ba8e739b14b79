"""The object store failing, as a client of the gateway sees it: 503 with Retry-After within
seconds, never a 500 and never minutes of waiting. S3 refused: a store pointed at a port
nobody listens on; S3 blackholed: a socket that accepts connections and never answers."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.settings import GatewaySettings
from shared.bus.memory import MemoryBus
from shared.store import S3Timeouts
from shared.store.s3 import S3Store
from tests.support.http import files_form
from tests.support.processes import free_port
from tests.support.reliability import Scenario, scenario
from tests.support.tokens import CONTRIBUTOR, CONTRIBUTOR_TOKEN, OPERATOR, OPERATOR_TOKEN

pytestmark = pytest.mark.timeout(30)
Client = TestClient[web.Request, web.Application]
GatewayOn = Callable[[str], Awaitable[Client]]


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)  # connections complete in the backlog; nothing is ever read or answered
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture
async def gateway_on(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GatewayOn]:
    """A gateway whose object store is S3 at the given endpoint, with short S3 timeouts."""
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    clients: list[Client] = []

    async def start(endpoint: str) -> Client:
        settings = GatewaySettings(operator_token=OPERATOR_TOKEN, contributor_token=CONTRIBUTOR_TOKEN)
        store = S3Store("dermascan", endpoint_url=endpoint, timeouts=S3Timeouts(0.5, 1.0, 2))
        client = TestClient(TestServer(create_app(settings, bus=MemoryBus(), store=store)))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


async def assert_unavailable(counts: Scenario, client: Client, method: str, path: str, within_s: float,
                             **kwargs: object) -> None:
    started = time.monotonic()
    response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    counts.answer(response.status, await response.json(content_type=None))
    assert response.status == 503, (path, response.status, await response.text())
    assert response.headers["Retry-After"].isdigit()
    assert (await response.json())["error"]["code"] == "store_unavailable"
    assert elapsed < within_s, (path, elapsed)


async def test_s3_refusing_connections_is_503_with_retry_after(gateway_on: GatewayOn) -> None:
    client = await gateway_on(f"http://127.0.0.1:{free_port()}")
    with scenario("S3 refused: the gateway's requests") as counts:
        await assert_unavailable(counts, client, "POST", "/upload-bulk", 3,
                                 data=files_form([("melanoma_1.jpg", b"x" * 1000)]), headers=CONTRIBUTOR)
        await assert_unavailable(counts, client, "GET", "/jobs/0123456789abcdef0123456789abcdef", 3)
        await assert_unavailable(counts, client, "POST", "/retrain", 3, json={"epochs": 1}, headers=OPERATOR)
        await assert_unavailable(counts, client, "GET", "/models", 3)
        health = await client.get("/health")
        body = await health.json()
        counts.answer(health.status, body)
        assert body["status"] == "degraded" and body["store"]["reachable"] is False
        ready = await client.get("/readyz")
        counts.answer(ready.status, await ready.json(content_type=None))
        assert ready.status == 503
        counts.notes.append("each 503 within 3 s; /health degraded, /readyz 503")


async def test_s3_that_never_answers_is_503_within_seconds(gateway_on: GatewayOn,
                                                           silent_endpoint: str) -> None:
    client = await gateway_on(silent_endpoint)
    # two S3 writes (the staged file, then the audit event), each two tries of (1 s for
    # `100 Continue` + 1 s for the answer): about 8 s, where botocore's defaults held an upload
    # for about 245 s
    with scenario("S3 blackholed: the gateway's requests") as counts:
        await assert_unavailable(counts, client, "POST", "/upload-bulk", 12,
                                 data=files_form([("melanoma_1.jpg", b"x" * 1000)]), headers=CONTRIBUTOR)
        await assert_unavailable(counts, client, "GET", "/jobs/0123456789abcdef0123456789abcdef", 5)
        counts.notes.append("upload 503 within 12 s, job read within 5 s "
                            "(S3 timeouts 0.5 s connect, 1 s read)")
