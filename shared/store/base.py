"""The `ObjectStore` protocol: flat keys (`a/b/c.ext`) to bytes, like S3.

Contract (pinned by tests/shared/test_store_contract.py): `put` overwrites atomically; `get`
of a missing key raises NotFound; `list` returns keys under a prefix, sorted; `delete` of a
missing key is a no-op; keys never contain `..` segments or a leading `/`.
"""

from __future__ import annotations

from typing import Protocol

from shared.errors import BadRequest


def check_key(key: str) -> str:
    """Return `key` if it is a safe object key; raises BadRequest otherwise."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in key:
        raise BadRequest(f"invalid object key {key!r}", code="invalid_key")
    return key


class ObjectStore(Protocol):
    """Where images, models and job records live. All methods are loop-only coroutines;
    blocking I/O runs in threads."""

    url: str

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None: ...

    async def get(self, key: str) -> bytes: ...

    async def exists(self, key: str) -> bool: ...

    async def list(self, prefix: str = "") -> list[str]: ...

    async def delete(self, key: str) -> None: ...

    async def ping(self) -> bool:
        """True when the store answers."""

    async def close(self) -> None: ...
