"""A version's LiteRT file travels with it: published beside the Keras file (the bundled model's
too), checked against the manifest's digest on the way in, and downloaded by `fetch`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from shared.litert import sha256_of
from shared.manifest import LiteRTArtifact, ModelManifest
from shared.registry import ModelRegistry
from shared.store import ObjectStore

pytestmark = pytest.mark.timeout(60)


def version_dir(directory: Path, version: str, *, litert: bool = True) -> Path:
    """Stand-in files (the registry never opens them) and a manifest naming the LiteRT one."""
    directory.mkdir(parents=True)
    (directory / "model.keras").write_bytes(f"keras weights of {version}".encode())
    flatbuffer = f"flatbuffer of {version}".encode()
    (directory / "model.tflite").write_bytes(flatbuffer)
    record = LiteRTArtifact(sha256=sha256_of(flatbuffer), parity_gap=1e-7, tolerance=1e-4) if litert else None
    manifest = ModelManifest(version=version, classes=["a", "b"], input_size=(32, 32), litert=record)
    (directory / "manifest.json").write_text(manifest.model_dump_json())
    return directory


def manifest_of(directory: Path) -> ModelManifest:
    return ModelManifest.model_validate_json((directory / "manifest.json").read_text())


async def test_the_litert_file_is_published_and_fetched(either_store: ObjectStore, tmp_path: Path) -> None:
    source = version_dir(tmp_path / "v1", "v1")
    registry = ModelRegistry(either_store)
    await registry.publish(source / "model.keras", manifest_of(source))
    assert await either_store.get("models/v1/model.tflite") == b"flatbuffer of v1"
    fetched = await registry.fetch("v1", tmp_path / "cache")
    for name in ("model.keras", "model.tflite"):
        assert (fetched / name).read_bytes() == (source / name).read_bytes()
    assert manifest_of(fetched) == manifest_of(source)


async def test_a_version_without_one_publishes_and_fetches_none(either_store: ObjectStore,
                                                                 tmp_path: Path) -> None:
    source = version_dir(tmp_path / "v1", "v1", litert=False)  # a file lies there, but is not named
    registry = ModelRegistry(either_store)
    await registry.publish(source / "model.keras", manifest_of(source))
    assert not await either_store.exists("models/v1/model.tflite")
    assert not (await registry.fetch("v1", tmp_path / "cache") / "model.tflite").exists()


async def test_a_litert_file_that_is_not_the_one_named_is_refused(either_store: ObjectStore,
                                                                   tmp_path: Path) -> None:
    source = version_dir(tmp_path / "v1", "v1")
    (source / "model.tflite").write_bytes(b"another flatbuffer")
    with pytest.raises(ValueError, match="not the file its manifest names"):
        await ModelRegistry(either_store).publish(source / "model.keras", manifest_of(source))
    assert not await either_store.exists("models/v1/manifest.json")  # not published


async def test_bootstrap_publishes_the_bundled_litert_file(either_store: ObjectStore, tmp_path: Path) -> None:
    bundled = version_dir(tmp_path / "base", "base-1")
    registry = ModelRegistry(either_store)
    assert await registry.bootstrap(bundled) == "base-1"
    assert await either_store.get("models/base-1/model.tflite") == b"flatbuffer of base-1"
    assert (await registry.manifest("base-1")).litert == manifest_of(bundled).litert


async def test_a_cache_from_before_litert_files_gets_the_file_and_a_missing_one_is_left_out(
        either_store: ObjectStore, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = ModelRegistry(either_store)
    for version in ("v1", "v2"):
        source = version_dir(tmp_path / version, version)
        await registry.publish(source / "model.keras", manifest_of(source))
    cache = tmp_path / "cache"
    (cache / "v1").mkdir(parents=True)  # fetched by a worker that knew only the Keras file
    for name in ("manifest.json", "model.keras"):
        (cache / "v1" / name).write_bytes((tmp_path / "v1" / name).read_bytes())
    assert (await registry.fetch("v1", cache) / "model.tflite").read_bytes() == b"flatbuffer of v1"

    await either_store.delete("models/v2/model.tflite")
    with caplog.at_level(logging.WARNING):
        fetched = await registry.fetch("v2", cache)
    assert (fetched / "model.keras").is_file() and not (fetched / "model.tflite").exists()
    assert "model.tflite is not in the store" in caplog.text
