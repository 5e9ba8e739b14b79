"""The model registry in the object store.

Layout: `models/<version>/model.keras` and `models/<version>/manifest.json` per version, and
`models/current.json` naming the version served. The pointer moves only through `promote`.
An empty store is seeded from the bundled model by `bootstrap`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from shared.errors import Conflict, NotFound
from shared.manifest import ModelManifest, utcnow
from shared.store import ObjectStore

log = logging.getLogger(__name__)

ARTIFACT = "model.keras"
MANIFEST = "manifest.json"
CURRENT_KEY = "models/current.json"
HISTORY_KEY = "models/history.json"


def _key(version: str, name: str) -> str:
    return f"models/{version}/{name}"


class ModelRegistry:
    """Versions of the model, kept in an `ObjectStore`. Loop-only."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    async def current_version(self) -> str | None:
        """The promoted version, or None for an empty registry."""
        try:
            pointer = json.loads(await self.store.get(CURRENT_KEY))
        except NotFound:
            return None
        return str(pointer["version"])

    async def manifest(self, version: str) -> ModelManifest:
        """The manifest of `version`; raises NotFound."""
        return ModelManifest.model_validate_json(await self.store.get(_key(version, MANIFEST)))

    async def versions(self) -> list[ModelManifest]:
        """Every published version, oldest first."""
        names = sorted({key.split("/")[1] for key in await self.store.list("models/") if key.endswith(MANIFEST)})
        manifests = [await self.manifest(name) for name in names]
        return sorted(manifests, key=lambda m: m.created_at)

    async def publish(self, artifact: Path, manifest: ModelManifest) -> None:
        """Store an artifact and its manifest as a new version (does not promote it)."""
        await self.store.put(_key(manifest.version, ARTIFACT), artifact.read_bytes())
        await self.store.put(
            _key(manifest.version, MANIFEST),
            manifest.model_dump_json(indent=2).encode(),
            content_type="application/json",
        )

    async def history(self) -> list[dict[str, str]]:
        """Promotions, oldest first: `{"version", "promoted_at"}`."""
        try:
            return list(json.loads(await self.store.get(HISTORY_KEY)))
        except NotFound:
            return []

    async def promote(self, version: str) -> None:
        """Make `version` current; raises NotFound for an unknown version."""
        await self.manifest(version)
        pointer = {"version": version, "promoted_at": utcnow().isoformat()}
        history = await self.history()
        history.append(pointer)
        await self.store.put(HISTORY_KEY, json.dumps(history).encode(), content_type="application/json")
        await self.store.put(CURRENT_KEY, json.dumps(pointer).encode(), content_type="application/json")

    async def rollback(self) -> str:
        """Promote the version that was current before this one; raises Conflict if none."""
        current = await self.current_version()
        earlier = [entry["version"] for entry in await self.history() if entry["version"] != current]
        if not earlier:
            raise Conflict("no earlier version to roll back to", code="nothing_to_roll_back")
        await self.promote(earlier[-1])
        return earlier[-1]

    async def fetch(self, version: str, cache_dir: Path) -> Path:
        """Download `version` into `cache_dir/<version>/` (once) and return that directory."""
        target = cache_dir / version
        if not (target / ARTIFACT).is_file():
            target.mkdir(parents=True, exist_ok=True)
            (target / MANIFEST).write_bytes(await self.store.get(_key(version, MANIFEST)))
            partial = target / f"{ARTIFACT}.part"
            partial.write_bytes(await self.store.get(_key(version, ARTIFACT)))
            partial.replace(target / ARTIFACT)
        return target

    async def bootstrap(self, bundled_dir: Path) -> str:
        """Seed an empty registry with the bundled model; return the current version."""
        current = await self.current_version()
        if current is not None:
            return current
        manifest = ModelManifest.model_validate_json((bundled_dir / MANIFEST).read_text())
        log.info("empty registry: publishing bundled model %s", manifest.version)
        await self.publish(bundled_dir / ARTIFACT, manifest)
        await self.promote(manifest.version)
        return manifest.version
