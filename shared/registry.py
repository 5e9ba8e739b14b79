"""The model registry in the object store.

Layout: `models/<version>/model.keras` and `models/<version>/manifest.json` per version (and
`models/<version>/evidence.npz`, its training evidence, where it has one), and
one record per promotion, `models/promotions/<n>.json` (n = 1, 2, ...), each written once with
a conditional create (`ObjectStore.create`): of two promotions racing for number n one gets it
and the other takes n + 1, so none is lost. The version served is the newest record's; the
history is the records in order. `models/current.json` mirrors the newest record for people
and tools (written after each promotion); the registry reads the records. The pointer moves
only through `promote`. An empty store is seeded from the bundled model by `bootstrap`.

Stores written before the promotion records keep their `models/history.json` and
`models/current.json`: their history comes first, and their pointer counts until the first
record is written.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from shared.errors import Conflict, NotFound, ServiceUnavailable
from shared.manifest import ModelManifest, utcnow
from shared.messages import new_id
from shared.store import AlreadyExists, ObjectStore

log = logging.getLogger(__name__)

ARTIFACT = "model.keras"
MANIFEST = "manifest.json"
EVIDENCE = "evidence.npz"  # what its head was trained, validated and judged on (trainer_service.evidence)
CURRENT_KEY = "models/current.json"
HISTORY_KEY = "models/history.json"  # before promotion records: read, never written
PROMOTIONS = "models/promotions/"
_PROMOTE_TRIES = 100  # each lost race means another promotion was recorded: progress


def _key(version: str, name: str) -> str:
    return f"models/{version}/{name}"


def _promotion_key(number: int) -> str:
    return f"{PROMOTIONS}{number:010d}.json"


class ModelRegistry:
    """Versions of the model, kept in an `ObjectStore`. Loop-only; any number of registries
    (in any number of processes) may promote at once."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    async def _numbers(self) -> list[int]:
        return sorted(int(name) for key in await self.store.list(PROMOTIONS)
                      if (name := key.removeprefix(PROMOTIONS).removesuffix(".json")).isdigit())

    async def _record(self, number: int) -> dict[str, str]:
        record = json.loads(await self.store.get(_promotion_key(number)))
        return {"version": str(record["version"]), "promoted_at": str(record["promoted_at"])}

    async def current_version(self) -> str | None:
        """The promoted version, or None for an empty registry."""
        numbers = await self._numbers()
        if numbers:
            return (await self._record(numbers[-1]))["version"]
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
        names = sorted({key.split("/")[1] for key in await self.store.list("models/")
                        if key.endswith(MANIFEST) and not key.startswith(PROMOTIONS)})
        manifests = [await self.manifest(name) for name in names]
        return sorted(manifests, key=lambda m: m.created_at)

    async def publish(self, artifact: Path, manifest: ModelManifest, *,
                      evidence: bytes | None = None) -> None:
        """Store an artifact, its training evidence (when it has one) and its manifest as a new
        version (does not promote it). The manifest goes last: a version is listed only once its
        files are all there."""
        await self.store.put(_key(manifest.version, ARTIFACT), await asyncio.to_thread(artifact.read_bytes))
        if evidence is not None:
            await self.store.put(_key(manifest.version, EVIDENCE), evidence)
        await self.store.put(
            _key(manifest.version, MANIFEST),
            manifest.model_dump_json(indent=2).encode(),
            content_type="application/json",
        )

    async def evidence(self, version: str) -> bytes:
        """The training evidence of `version`; raises NotFound when it has none."""
        return await self.store.get(_key(version, EVIDENCE))

    async def _legacy_history(self) -> list[dict[str, str]]:
        try:
            return list(json.loads(await self.store.get(HISTORY_KEY)))
        except NotFound:
            return []

    async def history(self) -> list[dict[str, str]]:
        """Promotions, oldest first: `{"version", "promoted_at"}`."""
        return await self._legacy_history() + [await self._record(n) for n in await self._numbers()]

    async def promote(self, version: str) -> None:
        """Make `version` current and record it in the history; raises NotFound for an unknown
        version. Concurrent promotions are all recorded, in the order they took their numbers;
        the last of them is current."""
        await self.manifest(version)
        await self._append(version)

    async def _append(self, version: str, *, only_first: bool = False) -> bool:
        """Write the next promotion record for `version` (with `only_first`, only record 1:
        False when it exists). Then mirror the newest record to `current.json`."""
        body = json.dumps({"version": version, "promoted_at": utcnow().isoformat(),
                           "promotion_id": new_id()}).encode()  # distinct bytes per writer
        for _ in range(_PROMOTE_TRIES):
            numbers = await self._numbers()
            number = numbers[-1] + 1 if numbers else 1
            if only_first and number != 1:
                return False
            try:
                await self.store.create(_promotion_key(number), body, content_type="application/json")
            except AlreadyExists:
                if only_first:
                    return False
                continue  # another promotion took this number: take the next
            await self._mirror()
            return True
        raise ServiceUnavailable(f"could not record the promotion of {version} in {_PROMOTE_TRIES} tries",
                                 code="promotion_contended")

    async def _mirror(self) -> None:
        numbers = await self._numbers()
        if numbers:
            newest = {**await self._record(numbers[-1]), "promotion": numbers[-1]}
            await self.store.put(CURRENT_KEY, json.dumps(newest).encode(), content_type="application/json")

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
        """Seed an empty registry with the bundled model; return the current version. Services
        starting together seed it once: only the first promotion record may be written."""
        current = await self.current_version()
        if current is not None:
            return current
        manifest = ModelManifest.model_validate_json((bundled_dir / MANIFEST).read_text())
        log.info("empty registry: publishing bundled model %s", manifest.version)
        evidence = bundled_dir / EVIDENCE
        await self.publish(bundled_dir / ARTIFACT, manifest,
                           evidence=evidence.read_bytes() if evidence.is_file() else None)
        await self._append(manifest.version, only_first=True)
        current = await self.current_version()
        assert current is not None  # record 1 exists now, ours or another starter's
        return current
