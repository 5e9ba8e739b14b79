"""Promotions as operators make them, several at once: every one is recorded, `/models` and the
workers end on the same version, and a broadcast that cannot be sent does not undo one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shared.manifest import ModelManifest
from shared.registry import ModelRegistry
from shared.store import open_store
from tests.gateway.conftest import Client, MakeClient
from tests.support.reliability import scenario
from tests.support.tokens import OPERATOR

pytestmark = pytest.mark.timeout(60)


async def publish_second_version(tmp_path: Path, tiny_model_dir: Path) -> None:
    manifest = ModelManifest.model_validate_json((tiny_model_dir / "manifest.json").read_text())
    registry = ModelRegistry(await open_store(tmp_path.as_uri()))
    await registry.publish(tiny_model_dir / "model.keras", manifest.model_copy(update={"version": "tiny-v2"}))


async def served_versions(client: Client) -> list[str]:
    return list((await (await client.get("/health")).json())["model_versions"])


async def test_twenty_concurrent_promotions_are_all_recorded_and_workers_serve_the_current_one(
        make_client: MakeClient, tmp_path: Path, tiny_model_dir: Path) -> None:
    client = await make_client()
    await publish_second_version(tmp_path, tiny_model_dir)
    before = len((await (await client.get("/models")).json())["history"])
    versions = ["tiny-v1" if i % 2 else "tiny-v2" for i in range(20)]
    with scenario("concurrent promotions") as counts:
        responses = await asyncio.gather(*(client.post(f"/models/{v}/promote", headers=OPERATOR)
                                           for v in versions))
        bodies = [await r.json() for r in responses]
        for response, body in zip(responses, bodies, strict=True):
            counts.answer(response.status, body)
        models = await (await client.get("/models")).json()
        recorded = len(models["history"]) - before
        counts.notes.append(f"20 at once (two versions), {recorded} promotion records written, in-process "
                            "gateway on a local-disk store")
    assert [r.status for r in responses] == [200] * 20
    assert sorted([body["promoted"] for body in bodies]) == sorted(versions)
    assert recorded == 20
    assert models["current"] == models["history"][-1]["version"]
    for _ in range(100):  # the workers follow the registry, whatever order the broadcasts came in
        if await served_versions(client) == [models["current"]]:
            break
        await asyncio.sleep(0.1)
    assert await served_versions(client) == [models["current"]]


async def test_a_promotion_whose_broadcast_fails_is_still_made(
        make_client: MakeClient, tmp_path: Path, tiny_model_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.bus import BrokerUnavailable
    from shared.bus.memory import MemoryBus

    client = await make_client(with_worker=False)
    await publish_second_version(tmp_path, tiny_model_dir)

    async def broker_down(*_: object) -> None:
        raise BrokerUnavailable("the message broker is not reachable")

    monkeypatch.setattr(MemoryBus, "broadcast", broker_down)
    response = await client.post("/models/tiny-v2/promote", headers=OPERATOR)
    assert response.status == 200
    assert await response.json() == {"current": "tiny-v2", "promoted": "tiny-v2", "announced": False}
    assert (await (await client.get("/models")).json())["current"] == "tiny-v2"
