"""One contract, two stores: local disk and S3 over HTTP (moto's server)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlparse

import boto3
import pytest

from shared.errors import BadRequest, NotFound
from shared.store import ObjectStore, open_store

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> AsyncIterator[ObjectStore]:
    if request.param == "local":
        store = await open_store(tmp_path.as_uri())
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        store = await open_store(f"s3://{unique}", endpoint_url=endpoint)
    yield store
    await store.close()


async def test_put_then_get_round_trips_bytes(store: ObjectStore) -> None:
    data = bytes(range(256)) * 100
    await store.put("images/melanoma/abc.jpg", data, content_type="image/jpeg")
    assert await store.get("images/melanoma/abc.jpg") == data
    assert await store.exists("images/melanoma/abc.jpg")


async def test_put_overwrites(store: ObjectStore) -> None:
    await store.put("models/current.json", b"v1")
    await store.put("models/current.json", b"v2")
    assert await store.get("models/current.json") == b"v2"


async def test_missing_keys_raise_not_found(store: ObjectStore) -> None:
    with pytest.raises(NotFound):
        await store.get("no/such/key")
    assert not await store.exists("no/such/key")
    await store.delete("no/such/key")  # a no-op, not an error


async def test_list_is_sorted_and_scoped_by_prefix(store: ObjectStore) -> None:
    for key in ("b/2", "a/1", "b/1", "c"):
        await store.put(key, b"x")
    assert await store.list("b/") == ["b/1", "b/2"]
    assert await store.list() == ["a/1", "b/1", "b/2", "c"]
    await store.delete("b/1")
    assert await store.list("b/") == ["b/2"]


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "/abs", "a//b", ""])
async def test_unsafe_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(BadRequest):
        await store.put(key, b"x")


async def test_ping_says_whether_the_store_answers(
        store: ObjectStore, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    assert await store.ping() is True
    if store.url.startswith("file:"):
        shutil.rmtree(tmp_path)  # the disk the store lived on is gone
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        boto3.client("s3", endpoint_url=endpoint).delete_bucket(Bucket=urlparse(store.url).netloc)
    assert await store.ping() is False  # an answer, not an exception
