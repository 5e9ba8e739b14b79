"""`GET /models` in pages: the newest versions and promotions first, each page oldest first (as the
whole lists were), with cursors to the pages before; the UI's first page is what it always read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.manifest import ModelManifest
from shared.registry import ModelRegistry
from shared.store import open_store
from tests.gateway.conftest import Client, MakeClient
from tests.support.tokens import OPERATOR

pytestmark = pytest.mark.timeout(60)


async def models(client: Client, **params: str) -> dict[str, Any]:
    response = await client.get("/models", params=params)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_versions_and_promotions_come_in_pages_with_cursors(
        make_client: MakeClient, tmp_path: Path, tiny_model_dir: Path) -> None:
    client = await make_client(with_worker=False, page_size=2, max_page_size=3)  # nothing seeds the store
    registry = ModelRegistry(await open_store(tmp_path.as_uri()))
    manifest = ModelManifest.model_validate_json((tiny_model_dir / "manifest.json").read_text())
    for n in (1, 2, 3, 4):
        version = manifest.model_copy(update={"version": f"v{n}"})
        await registry.publish(tiny_model_dir / "model.keras", version)
        assert (await client.post(f"/models/v{n}/promote", headers=OPERATOR)).status == 200

    first = await models(client)
    assert [v["version"] for v in first["versions"]] == ["v3", "v4"]
    assert first["current"] == "v4" and first["versions"][-1]["current"]
    assert [h["version"] for h in first["history"]] == ["v3", "v4"]
    second = await models(client, after=first["next"], history_after=first["history_next"])
    assert [v["version"] for v in second["versions"]] == ["v1", "v2"] and second["next"] is None
    assert [h["version"] for h in second["history"]] == ["v1", "v2"] and second["history_next"] is None
    everything = await models(client, limit="3")
    assert len(everything["versions"]) == 3 and everything["next"] is not None

    for params, code in (({"limit": "4"}, "invalid_limit"), ({"limit": "0"}, "invalid_limit"),
                         ({"after": "v1"}, "invalid_cursor"), ({"history_after": "1.5"}, "invalid_cursor")):
        response = await client.get("/models", params=params)
        assert response.status == 400 and (await response.json())["error"]["code"] == code
