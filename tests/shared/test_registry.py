"""The model registry in the object store: publish, promote, roll back, and seed from the bundled model."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import pytest

from shared.atomic_file import is_temporary
from shared.errors import Conflict, NotFound
from shared.manifest import ModelManifest
from shared.registry import CURRENT_KEY, ModelRegistry
from shared.store import ObjectStore, open_store
from tests.support.models import make_tiny_model

pytestmark = pytest.mark.timeout(60)
CLASSES = ["melanoma", "melanocytic_nevi", "benign_keratosis"]


@pytest.fixture
async def store(tmp_path: Path) -> ObjectStore:
    return await open_store((tmp_path / "store").as_uri())


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real model directory, as `models/base/` ships one."""
    return make_tiny_model(tmp_path_factory.mktemp("bundled"), version="base-1")


async def publish(registry: ModelRegistry, tmp_path: Path, version: str, *,
                  created_at: dt.datetime | None = None) -> bytes:
    """Publish a stand-in artifact (the registry never opens it) and return its bytes."""
    artifact = tmp_path / f"{version}.keras"
    artifact.write_bytes(f"weights of {version}".encode())
    manifest = ModelManifest(version=version, classes=CLASSES, input_size=(32, 32),
                             **({"created_at": created_at} if created_at else {}))
    await registry.publish(artifact, manifest)
    return artifact.read_bytes()


async def test_an_empty_registry_has_nothing_current(store: ObjectStore) -> None:
    registry = ModelRegistry(store)
    assert await registry.current_version() is None
    assert await registry.versions() == [] and await registry.history() == []
    with pytest.raises(NotFound):
        await registry.manifest("v1")


async def test_publishing_adds_a_version_without_serving_it(store: ObjectStore, tmp_path: Path) -> None:
    registry = ModelRegistry(store)
    await publish(registry, tmp_path, "v1")
    assert [m.version for m in await registry.versions()] == ["v1"]
    manifest = await registry.manifest("v1")
    assert manifest.classes == CLASSES and manifest.input_size == (32, 32)
    assert await registry.current_version() is None and await registry.history() == []


async def test_versions_are_listed_oldest_first(store: ObjectStore, tmp_path: Path) -> None:
    registry = ModelRegistry(store)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for days, version in [(2, "a-newest"), (0, "z-oldest"), (1, "m-middle")]:
        await publish(registry, tmp_path, version, created_at=start + dt.timedelta(days=days))
    assert [m.version for m in await registry.versions()] == ["z-oldest", "m-middle", "a-newest"]


async def test_promotion_moves_the_pointer_and_is_recorded(store: ObjectStore, tmp_path: Path) -> None:
    registry = ModelRegistry(store)
    for version in ("v1", "v2"):
        await publish(registry, tmp_path, version)
        await registry.promote(version)
        assert await registry.current_version() == version
    history = await registry.history()
    assert [entry["version"] for entry in history] == ["v1", "v2"]
    assert history[0]["promoted_at"] <= history[1]["promoted_at"]
    assert dt.datetime.fromisoformat(history[1]["promoted_at"]).tzinfo is not None
    assert json.loads(await store.get(CURRENT_KEY))["version"] == "v2"  # what other services read


async def test_an_unknown_version_cannot_be_promoted_and_nothing_changes(
        store: ObjectStore, tmp_path: Path) -> None:
    registry = ModelRegistry(store)
    await publish(registry, tmp_path, "v1")
    await registry.promote("v1")
    with pytest.raises(NotFound):
        await registry.promote("v9")
    assert await registry.current_version() == "v1"
    assert [entry["version"] for entry in await registry.history()] == ["v1"]


async def test_rollback_serves_the_version_that_was_current_before(store: ObjectStore,
                                                                   tmp_path: Path) -> None:
    registry = ModelRegistry(store)
    for version in ("v1", "v2", "v3"):
        await publish(registry, tmp_path, version)
        await registry.promote(version)
    assert await registry.rollback() == "v2"
    assert await registry.current_version() == "v2"
    assert [entry["version"] for entry in await registry.history()] == ["v1", "v2", "v3", "v2"]


async def test_rollback_with_nothing_earlier_is_a_conflict(store: ObjectStore, tmp_path: Path) -> None:
    registry = ModelRegistry(store)
    with pytest.raises(Conflict):
        await registry.rollback()  # empty registry
    await publish(registry, tmp_path, "v1")
    await registry.promote("v1")
    await registry.promote("v1")  # promoted twice is still one version
    with pytest.raises(Conflict) as refused:
        await registry.rollback()
    assert refused.value.code == "nothing_to_roll_back"
    assert await registry.current_version() == "v1"


async def test_fetch_downloads_a_version_once(store: ObjectStore, tmp_path: Path) -> None:
    registry = ModelRegistry(store)
    weights = await publish(registry, tmp_path, "v1")
    cache = tmp_path / "cache"
    directory = await registry.fetch("v1", cache)
    assert directory == cache / "v1"
    assert (directory / "model.keras").read_bytes() == weights
    assert ModelManifest.model_validate_json((directory / "manifest.json").read_text()).version == "v1"
    assert [p.name for p in directory.iterdir() if is_temporary(p.name)] == []
    await store.delete("models/v1/model.keras")  # a second fetch must not need the store
    assert await registry.fetch("v1", cache) == directory
    assert (directory / "model.keras").read_bytes() == weights
    with pytest.raises(NotFound):
        await registry.fetch("v9", cache)


async def test_bootstrap_seeds_an_empty_registry_from_the_bundled_model(
        store: ObjectStore, bundled: Path, tmp_path: Path) -> None:
    registry = ModelRegistry(store)
    assert await registry.bootstrap(bundled) == "base-1"
    assert await registry.current_version() == "base-1"
    assert [entry["version"] for entry in await registry.history()] == ["base-1"]
    fetched = await registry.fetch("base-1", tmp_path / "cache")
    assert (fetched / "model.keras").read_bytes() == (bundled / "model.keras").read_bytes()
    assert (await registry.manifest("base-1")).classes == CLASSES


async def test_bootstrap_leaves_a_registry_that_serves_something_alone(
        store: ObjectStore, bundled: Path, tmp_path: Path) -> None:
    registry = ModelRegistry(store)
    await publish(registry, tmp_path, "v7")
    await registry.promote("v7")
    assert await registry.bootstrap(bundled) == "v7"
    assert await registry.current_version() == "v7"
    assert [m.version for m in await registry.versions()] == ["v7"]  # the bundled model not even published


class OverlappingReads:
    """Wraps a store so that the next `readers` reads of what a promotion reads before it writes
    (the pointer, `current.json`) all return before any caller goes on: concurrent promotions
    (a trainer's and an operator's, say) made to overlap every time."""

    def __init__(self, inner: ObjectStore, readers: int = 2) -> None:
        self.inner, self.readers = inner, readers
        self._arrived, self._all_read = 0, asyncio.Event()

    async def _overlap(self) -> None:
        if self._arrived < self.readers:
            self._arrived += 1
            if self._arrived == self.readers:
                self._all_read.set()
            await self._all_read.wait()

    async def get(self, key: str) -> bytes:
        data = await self.inner.get(key)
        if key == CURRENT_KEY:
            await self._overlap()
        return data

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_overlapping_promotions_are_both_recorded(store: ObjectStore, tmp_path: Path) -> None:
    registry = ModelRegistry(store)
    for version in ("v1", "v2", "v3"):
        await publish(registry, tmp_path, version)
    await registry.promote("v1")
    racing = ModelRegistry(OverlappingReads(store))  # type: ignore[arg-type]  # a partial store: what promote uses
    await asyncio.gather(racing.promote("v2"), racing.promote("v3"))
    promoted = [entry["version"] for entry in await registry.history()]
    assert sorted(promoted[1:]) == ["v2", "v3"], promoted
    assert promoted[-1] == await registry.current_version()


async def test_twenty_concurrent_promotions_are_all_recorded_and_the_last_is_current(
        store: ObjectStore, tmp_path: Path) -> None:
    for version in ("v1", "v2"):
        await publish(ModelRegistry(store), tmp_path, version)
    registries = [ModelRegistry(store) for _ in range(20)]  # twenty gateways, one store
    await asyncio.gather(*(r.promote("v1" if i % 2 else "v2") for i, r in enumerate(registries)))
    history = await ModelRegistry(store).history()
    assert len(history) == 20 and sorted(e["version"] for e in history) == ["v1"] * 10 + ["v2"] * 10
    current = await ModelRegistry(store).current_version()
    assert current == history[-1]["version"]
    # current.json, the mirror people and tools read, ends on the newest record too
    assert json.loads(await store.get(CURRENT_KEY))["version"] == current


async def test_services_bootstrapping_together_seed_the_registry_once(
        store: ObjectStore, bundled: Path) -> None:
    starters = [ModelRegistry(store) for _ in range(4)]  # worker, trainer, ... starting at once
    assert await asyncio.gather(*(r.bootstrap(bundled) for r in starters)) == ["base-1"] * 4
    assert [entry["version"] for entry in await ModelRegistry(store).history()] == ["base-1"]


async def test_a_pointer_written_before_promotion_records_serves_until_the_first_promotion(
        store: ObjectStore, tmp_path: Path) -> None:
    registry = ModelRegistry(store)
    for version in ("v2", "v3"):
        await publish(registry, tmp_path, version)
    pointer = {"version": "v2", "promoted_at": "2026-01-02T00:00:00+00:00"}  # no promotion number
    await store.put(CURRENT_KEY, json.dumps(pointer).encode())
    assert await registry.current_version() == "v2"
    await registry.promote("v3")
    assert await registry.current_version() == "v3"
    assert [e["version"] for e in await registry.history()] == ["v3"]


async def test_pages_of_versions_and_promotions_walk_back_from_the_newest(store: ObjectStore,
                                                                         tmp_path: Path) -> None:
    registry = ModelRegistry(store)
    for n in range(1, 8):
        await publish(registry, tmp_path, f"v{n}")
        await registry.promote(f"v{n}")
    await publish(registry, tmp_path, "v3")  # published again: keeps its place
    pages, before = [], None
    while True:
        manifests, before = await registry.versions_page(3, before)
        pages.append([m.version for m in manifests])
        if before is None:
            break
    assert pages == [["v5", "v6", "v7"], ["v2", "v3", "v4"], ["v1"]]  # oldest first within a page
    entries, earlier = await registry.history_page(4)
    assert [e["version"] for e in entries] == ["v4", "v5", "v6", "v7"] and earlier == 4
    entries, earlier = await registry.history_page(4, earlier)
    assert [e["version"] for e in entries] == ["v1", "v2", "v3"] and earlier is None
    assert [e["version"] for e in await registry.history()] == [f"v{n}" for n in range(1, 8)]


async def test_versions_published_before_the_version_log_are_listed_once(store: ObjectStore,
                                                                          tmp_path: Path) -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for days, version in [(1, "b-second"), (0, "a-first")]:  # as an earlier release left them
        manifest = ModelManifest(version=version, classes=CLASSES, input_size=(32, 32),
                                 created_at=start + dt.timedelta(days=days))
        await store.put(f"models/{version}/manifest.json", manifest.model_dump_json().encode())
    registry = ModelRegistry(store)
    await publish(registry, tmp_path, "c-new")
    manifests, before = await registry.versions_page(2)
    assert [m.version for m in manifests] == ["b-second", "c-new"] and before == 0
    manifests, before = await registry.versions_page(2, before)
    assert [m.version for m in manifests] == ["a-first"] and before is None
    await store.put("models/z-later/manifest.json", b"{}")  # not through publish: never listed, never read
    assert [m.version for m in await registry.versions()] == ["a-first", "b-second", "c-new"]


async def test_a_pointer_left_behind_is_read_past_and_moved_up(store: ObjectStore, tmp_path: Path) -> None:
    registry = ModelRegistry(store)
    for version in ("v1", "v2"):
        await publish(registry, tmp_path, version)
    await registry.promote("v1")
    # a promotion whose writer stopped between its record and the pointer
    await store.create("models/promotions/0000000002.json", json.dumps(
        {"version": "v2", "promoted_at": "2026-01-01T00:00:00+00:00", "promotion_id": "x"}).encode())
    assert json.loads(await store.get(CURRENT_KEY))["version"] == "v1"
    assert await registry.current_version() == "v2"
    assert json.loads(await store.get(CURRENT_KEY))["promotion"] == 2, "the next reader reads no further"
    await registry.promote("v1")
    assert [e["version"] for e in await registry.history()] == ["v1", "v2", "v1"]
