"""The `ObjectStore` protocol: flat keys (`a/b/c.ext`) to bytes, like S3.

Contract (pinned by tests/shared/test_store_contract.py): `put` overwrites atomically; `create`
writes only a key that does not exist yet, atomically (exactly one of many concurrent creates
of a key succeeds; the others raise AlreadyExists); `put_if` writes only over the version of a
key its writer read (`get_versioned`: S3's ETag, a content hash on disk), atomically with respect
to every other `put_if` and `create` of the key, and raises VersionMismatch when somebody wrote
(or deleted) it since; `get` of a missing key raises NotFound;
`list` returns keys under a prefix, sorted, and `list_stamped` the same keys each with a stamp
that changes whenever its bytes do; `delete` of a missing key is a no-op; keys never
contain `..` segments or a leading `/`. A store that cannot be reached (refused, silent past
its timeouts, failing) raises StoreUnavailable: a 503 with Retry-After at the gateway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shared.errors import BadRequest, Conflict, ServiceUnavailable


class AlreadyExists(Conflict):
    """`create` of a key that exists: somebody else wrote it first."""

    default_code = "already_exists"


class VersionMismatch(Conflict):
    """`put_if` over a version that is no longer the key's: somebody else wrote (or deleted) it
    since it was read, or (expecting none) it exists. Read it again and decide again."""

    default_code = "version_mismatch"


class StoreUnavailable(ServiceUnavailable):
    """The object store refused, timed out or failed; a later try may succeed."""

    default_code = "store_unavailable"


@dataclass(frozen=True)
class S3Timeouts:
    """How long one S3 call may take: each try connects within `connect_s` and hears from the
    server within `read_s` of each wait (an upload waits twice: for `100 Continue`, then for
    the answer), and a call makes at most `max_attempts` tries in all (botocore's standard
    retry mode: connection errors, timeouts, 5xx and throttling)."""

    connect_s: float = 2.0
    read_s: float = 5.0
    max_attempts: int = 2


def check_key(key: str) -> str:
    """Return `key` if it is a safe object key; raises BadRequest otherwise."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in key:
        raise BadRequest(f"invalid object key {key!r}", code="invalid_key")
    return key


class ObjectStore(Protocol):
    """Where images, models and job records live. All methods are loop-only coroutines;
    blocking I/O runs in threads. Every method may raise StoreUnavailable."""

    url: str

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None: ...

    async def create(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        """Write `key` only if it does not exist (S3 `If-None-Match: *`, a no-clobber link on
        disk); raises AlreadyExists otherwise. Readers never see part of `data`. Give each
        writer distinct bytes (an id in them): a create retried after a lost answer that finds
        exactly its own bytes counts as done."""

    async def put_if(self, key: str, data: bytes, *, version: str | None,
                     content_type: str = "application/octet-stream") -> str:
        """Write `key` only if its version is still `version` (None: only if it does not exist,
        like `create`), and return the new version. Raises VersionMismatch otherwise (also when
        the key was deleted since). Readers never see part of `data`. Like `create`, a write
        retried after a lost answer that finds exactly its own bytes counts as done."""

    async def get(self, key: str) -> bytes: ...

    async def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The bytes of `key` and their version, the token `put_if` compares: S3's ETag, a hash
        of the bytes on disk (so a write of identical bytes is no change). Raises NotFound."""

    async def exists(self, key: str) -> bool: ...

    async def list(self, prefix: str = "") -> list[str]: ...

    async def list_stamped(self, prefix: str = "") -> dict[str, str]:
        """The keys under `prefix`, sorted, each with a stamp that changes whenever its bytes do
        (S3: the ETag its listing gives; on disk: the file's inode, size and times, which a write
        replaces): a reader that keeps what it read by stamp reads again only what was written
        since, in one listing. Not a `put_if` version: compare stamps only with stamps."""

    async def delete(self, key: str) -> None: ...

    async def ping(self) -> bool:
        """True when the store answers."""

    async def close(self) -> None: ...
