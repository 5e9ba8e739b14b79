"""The embedded mode on RabbitMQ (`DERMASCAN_BROKER_URL=amqp://...`) connects as the distributed
services do: with the broker heartbeat setting, so a silent broker is noticed within it."""

from __future__ import annotations

from typing import Any

import pytest

import embedded.__main__ as embedded_main
from embedded.__main__ import EmbeddedSettings, open_bus
from gateway.settings import GatewaySettings
from shared.bus import MessageBus

pytestmark = pytest.mark.timeout(60)


async def test_the_embedded_mode_connects_with_the_broker_heartbeat_setting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: dict[str, Any] = {}

    async def connect_bus(url: str, **options: Any) -> MessageBus:
        asked.update(options, url=url)
        raise ConnectionRefusedError("no broker in this test")

    monkeypatch.setattr(embedded_main, "connect_bus", connect_bus)
    settings = GatewaySettings(broker_url="amqp://guest:guest@127.0.0.1:1/", broker_heartbeat_s=3,
                               broker_publish_timeout_s=4)
    with pytest.raises(ConnectionRefusedError):
        await open_bus(settings, EmbeddedSettings())
    assert asked == {"url": "amqp://guest:guest@127.0.0.1:1/", "heartbeat_s": 3, "publish_timeout_s": 4}
