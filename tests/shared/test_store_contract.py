"""One contract, two stores: local disk and S3 over HTTP (moto's server)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlparse

import boto3
import pytest

from shared.atomic_file import TEMP_PREFIX
from shared.errors import BadRequest, NotFound
from shared.store import (
    AlreadyExists,
    ObjectStore,
    S3Timeouts,
    StoreUnavailable,
    VersionMismatch,
    open_store,
)
from shared.store.s3 import S3Store
from tests.support.processes import free_port

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
    with pytest.raises(NotFound) as missing:
        await store.get("no/such/key")
    assert "no/such" not in missing.value.message  # a 404 that may reach a client names no store key
    assert not await store.exists("no/such/key")
    await store.delete("no/such/key")  # a no-op, not an error


async def test_list_is_sorted_and_scoped_by_prefix(store: ObjectStore) -> None:
    for key in ("b/2", "a/1", "b/1", "c"):
        await store.put(key, b"x")
    assert await store.list("b/") == ["b/1", "b/2"]
    assert await store.list() == ["a/1", "b/1", "b/2", "c"]
    await store.delete("b/1")
    assert await store.list("b/") == ["b/2"]


async def test_a_stamped_listing_changes_a_stamp_only_where_the_bytes_changed(store: ObjectStore) -> None:
    for key in ("catalog/b", "catalog/a", "models/x"):
        await store.put(key, b"first")
    before = await store.list_stamped("catalog/")
    assert list(before) == ["catalog/a", "catalog/b"] == await store.list("catalog/")
    await store.put("catalog/b", b"second, longer")
    await store.put("catalog/a", b"first")  # rewritten, same bytes: a stamp may change or not
    await store.create("catalog/c", b"new")
    after = await store.list_stamped("catalog/")
    assert list(after) == ["catalog/a", "catalog/b", "catalog/c"]
    assert after["catalog/b"] != before["catalog/b"]
    await store.put("catalog/b", b"third, as long")  # the same size as the second
    assert (await store.list_stamped("catalog/"))["catalog/b"] != after["catalog/b"]
    assert await store.list_stamped("catalog/") == await store.list_stamped("catalog/")  # nothing written
    await store.delete("catalog/a")
    assert list(await store.list_stamped("catalog/")) == ["catalog/b", "catalog/c"]


async def test_the_local_store_lists_no_file_still_being_written(tmp_path: Path) -> None:
    store = await open_store(tmp_path.as_uri())
    await store.put("images/a.jpg", b"a")
    (tmp_path / "images" / f"{TEMP_PREFIX}b.jpg.0a1b2c").write_bytes(b"half of b")  # a put mid-write
    assert await store.list("images/") == ["images/a.jpg"]
    assert list(await store.list_stamped("images/")) == ["images/a.jpg"]
    await store.close()


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


async def test_create_writes_a_new_key_once_and_refuses_to_overwrite(store: ObjectStore) -> None:
    await store.create("jobs/claims/0000000001.json", b'{"job_id": "a"}', content_type="application/json")
    assert await store.get("jobs/claims/0000000001.json") == b'{"job_id": "a"}'
    with pytest.raises(AlreadyExists) as refused:
        await store.create("jobs/claims/0000000001.json", b'{"job_id": "b"}')
    assert refused.value.status == 409
    assert await store.get("jobs/claims/0000000001.json") == b'{"job_id": "a"}'  # the first write stands
    assert await store.list("jobs/claims/") == ["jobs/claims/0000000001.json"]  # no temp files left


async def test_create_of_a_key_put_earlier_is_refused(store: ObjectStore) -> None:
    await store.put("models/promotions/0000000001.json", b"put")
    with pytest.raises(AlreadyExists):
        await store.create("models/promotions/0000000001.json", b"created")
    assert await store.get("models/promotions/0000000001.json") == b"put"


async def test_exactly_one_of_many_concurrent_creates_wins(store: ObjectStore) -> None:
    if store.url.startswith("s3:"):
        # moto checks If-None-Match and then writes, without a lock: in 100 rounds of 16 racing
        # creates 2 rounds had two winners. S3 and MinIO decide atomically; moto only pins the
        # sequential answer (the tests above).
        pytest.skip("moto's If-None-Match is not atomic under concurrency")

    async def attempt(i: int) -> bool:
        try:
            await store.create("jobs/claims/0000000001.json", f"writer {i}".encode())
        except AlreadyExists:
            return False
        return True

    for _ in range(20):
        await store.delete("jobs/claims/0000000001.json")
        wins = await asyncio.gather(*(attempt(i) for i in range(16)))
        assert sum(wins) == 1, wins
        winner = wins.index(True)
        assert await store.get("jobs/claims/0000000001.json") == f"writer {winner}".encode()


async def test_put_if_writes_only_over_the_version_its_writer_read(store: ObjectStore) -> None:
    first = await store.put_if("jobs/a.json", b"queued", version=None)
    with pytest.raises(VersionMismatch) as exists:
        await store.put_if("jobs/a.json", b"queued again", version=None)  # a new key only
    assert exists.value.status == 409
    data, version = await store.get_versioned("jobs/a.json")
    assert (data, version) == (b"queued", first)

    observer = await store.put_if("jobs/a.json", b"failed: worker_lost", version=version)
    assert observer != version
    with pytest.raises(VersionMismatch):  # the trainer still holds the version it read
        await store.put_if("jobs/a.json", b"succeeded", version=version)
    assert await store.get_versioned("jobs/a.json") == (b"failed: worker_lost", observer)

    await store.put("jobs/a.json", b"overwritten")  # an unconditional put is a new version too
    with pytest.raises(VersionMismatch):
        await store.put_if("jobs/a.json", b"succeeded", version=observer)
    await store.delete("jobs/a.json")
    with pytest.raises(VersionMismatch):  # deleted since: no version matches
        await store.put_if("jobs/a.json", b"succeeded", version=observer)
    with pytest.raises(NotFound):
        await store.get_versioned("jobs/a.json")
    assert await store.list("jobs/") == []  # no temp files left


async def test_of_concurrent_put_ifs_over_one_version_exactly_one_wins(store: ObjectStore) -> None:
    if store.url.startswith("s3:"):
        pytest.skip("moto checks If-Match, then writes, without a lock, as it does If-None-Match (above)")
    version = await store.put_if("jobs/b.json", b"running", version=None)

    async def attempt(i: int) -> bool:
        try:
            await store.put_if("jobs/b.json", f"writer {i}".encode(), version=version)
        except VersionMismatch:
            return False
        return True

    wins = await asyncio.gather(*(attempt(i) for i in range(16)))
    assert sum(wins) == 1, wins
    assert await store.get("jobs/b.json") == f"writer {wins.index(True)}".encode()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers: a blackholed S3."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield server.getsockname()[1]


async def test_s3_refusing_connections_is_unavailable_at_once() -> None:
    store = S3Store("dermascan", endpoint_url=f"http://127.0.0.1:{free_port()}")  # nobody listens
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as refused:
        await store.put("images/x.jpg", b"x")
    assert refused.value.status == 503 and refused.value.retryable
    for call in (store.get("a"), store.list("a/"), store.create("a", b"x"), store.exists("a")):
        with pytest.raises(StoreUnavailable):
            await call
    assert await store.ping() is False
    assert time.monotonic() - started < 10
    with pytest.raises(StoreUnavailable):
        await open_store("s3://dermascan", endpoint_url=f"http://127.0.0.1:{free_port()}")
    await store.close()


async def test_s3_that_never_answers_is_unavailable_within_its_timeouts(silent_port: int) -> None:
    limits = S3Timeouts(connect_s=0.5, read_s=1.0, max_attempts=2)
    store = S3Store("dermascan", endpoint_url=f"http://127.0.0.1:{silent_port}", timeouts=limits)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.put("images/x.jpg", b"x" * 1000)
    elapsed = time.monotonic() - started
    # two tries, each waiting read_s for `100 Continue` and read_s for the answer: about 4 s,
    # where botocore's defaults (60 s reads, 5 tries) held an upload for minutes
    assert 2.0 <= elapsed < 6, elapsed
    await store.close()


async def test_a_local_store_whose_disk_fails_is_unavailable(tmp_path: Path) -> None:
    store = await open_store((tmp_path / "store").as_uri())
    (tmp_path / "store" / "images").write_bytes(b"a file where a folder should be")
    with pytest.raises(StoreUnavailable):
        await store.put("images/melanoma/x.jpg", b"x")
    with pytest.raises(StoreUnavailable):
        await store.create("images/melanoma/x.jpg", b"x")
