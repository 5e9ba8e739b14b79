"""The split secret: created once in the store however many services start at once (local disk
and S3), read by everyone after; and the draws it makes: one split per lesion group, about one
group in five held out, one training group in ten validating, none computable without it."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from shared.catalog import EVAL_EVERY, VALIDATION_EVERY, lesion_group, split_for, validation_share
from shared.split_secret import SECRET_KEY, load_split_secret
from shared.store import ObjectStore, open_store

pytestmark = pytest.mark.timeout(60)
OpenStore = Callable[[], Awaitable[ObjectStore]]


@pytest.fixture(params=["local", "s3"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path,
                 unique: str) -> AsyncIterator[OpenStore]:
    """Opens stores on one place, as separate services would (each its own client)."""
    opened: list[ObjectStore] = []
    endpoint = request.getfixturevalue("s3_endpoint") if request.param == "s3" else None

    async def open_one() -> ObjectStore:
        url = f"s3://{unique}" if endpoint else (tmp_path / "store").as_uri()
        store = await open_store(url, endpoint_url=endpoint)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


async def test_services_starting_at_once_share_one_secret_created_once(stores: OpenStore) -> None:
    services = [await stores() for _ in range(8)]
    secrets = await asyncio.gather(*(load_split_secret(store, None) for store in services))
    assert len(set(secrets)) == 1 and len(secrets[0]) == 32
    first = services[0]
    assert await first.list("secrets/") == [SECRET_KEY]
    body = await first.get(SECRET_KEY)
    later = await load_split_secret(await stores(), None)
    assert later == secrets[0] and await first.get(SECRET_KEY) == body  # read, never written again


async def test_a_configured_secret_wins_and_writes_nothing(stores: OpenStore) -> None:
    store = await stores()
    mine = "the operator's own secret"
    assert await load_split_secret(store, SecretStr(mine)) == mine.encode()
    assert await store.list("secrets/") == []


async def test_a_damaged_secret_object_is_an_error_not_another_secret(stores: OpenStore) -> None:
    store = await stores()
    await store.put(SECRET_KEY, b'{"secret": "short"}')
    with pytest.raises(ValidationError):
        await load_split_secret(store, None)


def test_every_image_of_a_lesion_group_has_the_groups_split() -> None:
    secret = b"x" * 32
    for n in range(200):
        lesion = f"HAM_{n:07d}"
        images = [hashlib.sha256(f"{lesion}/{i}".encode()).hexdigest() for i in range(4)]
        assert len({split_for(lesion_group(sha, lesion), secret) for sha in images}) == 1
        assert len({validation_share(lesion_group(sha, lesion), secret) for sha in images}) == 1
    assert lesion_group("ab" * 32, None) == "ab" * 32  # no group: the image is its own


def test_draws_are_fair_independent_and_follow_the_secret() -> None:
    groups = [hashlib.sha256(str(n).encode()).hexdigest() for n in range(20_000)]
    one, other = b"one secret", b"another secret"
    held = [split_for(g, one) == "eval" for g in groups]
    validating = [validation_share(g, one) for g, h in zip(groups, held, strict=True) if not h]
    assert abs(sum(held) / len(groups) - 1 / EVAL_EVERY) < 0.01
    assert abs(sum(validating) / len(validating) - 1 / VALIDATION_EVERY) < 0.01  # of training groups
    # another secret draws other groups: agreement is what chance gives (0.2^2 + 0.8^2 = 0.68)
    agree = sum((split_for(g, other) == "eval") == h for g, h in zip(groups, held, strict=True)) / len(groups)
    assert abs(agree - 0.68) < 0.02
    # the content hash says nothing: the old public rule (hash mod 5) matches no better than chance
    public = [int(g[:8], 16) % EVAL_EVERY == 0 for g in groups]
    picked = [h for h, p in zip(held, public, strict=True) if p]
    assert abs(sum(picked) / len(picked) - 1 / EVAL_EVERY) < 0.03
    with pytest.raises(ValueError):
        split_for(groups[0], b"")
