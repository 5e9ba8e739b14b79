"""Object stores: S3/MinIO for the distributed mode, local disk for the embedded one."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from shared.store.base import ObjectStore, check_key


async def open_store(url: str, *, endpoint_url: str | None = None) -> ObjectStore:
    """Open the store named by `url`: `file:///abs/path`, `file://./rel/path` or
    `s3://bucket[/prefix]` (with `endpoint_url` for MinIO or another S3 server)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        from shared.store.local import LocalStore

        return LocalStore(Path(unquote(parsed.netloc + parsed.path)))
    if parsed.scheme == "s3":
        from shared.store.s3 import S3Store

        store = S3Store(parsed.netloc, endpoint_url=endpoint_url, prefix=parsed.path)
        await store.open()
        return store
    raise ValueError(f"unsupported store URL {url!r}: use file:// or s3://")


__all__ = ["ObjectStore", "check_key", "open_store"]
