"""Object stores: S3/MinIO for the distributed mode, local disk for the embedded one."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from shared.store.base import (
    AlreadyExists,
    ObjectStore,
    S3Timeouts,
    StoreUnavailable,
    VersionMismatch,
    check_key,
)


class StoreSettings(Protocol):
    """The settings `open_store_for` reads (every service's CommonSettings has them)."""

    store_url: str
    s3_endpoint_url: str | None
    store_connect_timeout_s: float
    store_read_timeout_s: float
    store_max_attempts: int


async def open_store(url: str, *, endpoint_url: str | None = None,
                     timeouts: S3Timeouts | None = None) -> ObjectStore:
    """Open the store named by `url`: `file:///abs/path`, `file://./rel/path` or
    `s3://bucket[/prefix]` (with `endpoint_url` for MinIO or another S3 server, and the
    `timeouts` of each S3 call: S3Timeouts' defaults when None). Raises StoreUnavailable when
    S3 does not answer."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        from shared.store.local import LocalStore

        return LocalStore(Path(unquote(parsed.netloc + parsed.path)))
    if parsed.scheme == "s3":
        from shared.store.s3 import S3Store

        store = S3Store(parsed.netloc, endpoint_url=endpoint_url, prefix=parsed.path, timeouts=timeouts)
        await store.open()
        return store
    raise ValueError(f"unsupported store URL {url!r}: use file:// or s3://")


def timeouts_of(settings: StoreSettings) -> S3Timeouts:
    """The S3 call limits `settings` asks for."""
    return S3Timeouts(connect_s=settings.store_connect_timeout_s, read_s=settings.store_read_timeout_s,
                      max_attempts=settings.store_max_attempts)


async def open_store_for(settings: StoreSettings) -> ObjectStore:
    """`open_store` of a service's settings: its URL, S3 endpoint and S3 timeouts."""
    return await open_store(settings.store_url, endpoint_url=settings.s3_endpoint_url,
                            timeouts=timeouts_of(settings))


__all__ = ["AlreadyExists", "ObjectStore", "S3Timeouts", "StoreSettings", "StoreUnavailable",
           "VersionMismatch", "check_key", "open_store", "open_store_for", "timeouts_of"]
