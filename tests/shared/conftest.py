"""Fixtures of the tests of `shared/`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.bus import MessageBus, connect_bus
from shared.store import ObjectStore, open_store


@pytest.fixture(params=["memory", "rabbitmq"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[MessageBus]:
    """The in-memory bus, then real RabbitMQ: a test using it is the contract of both (only the
    RabbitMQ case asks for `rabbit_url`, which `make test-fast` skips when no broker answers)."""
    url = "memory://" if request.param == "memory" else request.getfixturevalue("rabbit_url")
    bus = await connect_bus(url)
    assert bus.connected, "RabbitMQ must be running on 127.0.0.1:5672 (make test starts it)"
    yield bus
    await bus.close()


@pytest.fixture(params=["local", "s3"])
async def either_store(request: pytest.FixtureRequest, tmp_path: Path,
                       unique: str) -> AsyncIterator[ObjectStore]:
    """Local disk or S3 over HTTP (moto's server): job writes are conditional on both."""
    if request.param == "local":
        store = await open_store(tmp_path.as_uri())
    else:
        store = await open_store(f"s3://{unique}", endpoint_url=request.getfixturevalue("s3_endpoint"))
    yield store
    await store.close()
