"""An `ObjectStore` on the local disk, for the embedded mode: one file per key."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from shared.atomic_file import is_temporary, write_whole
from shared.errors import NotFound
from shared.store.base import AlreadyExists, StoreUnavailable, VersionMismatch, check_key

T = TypeVar("T")


def version_of(data: bytes) -> str:
    """The version `get_versioned` reports for bytes on disk: a hash of them (as S3's ETag of a
    plain upload is), so identical bytes are the same version."""
    return hashlib.sha256(data).hexdigest()[:32]


class LocalStore:
    """Keys map to files under `root`. Writes are atomic (`shared.atomic_file`): a temporary
    file, then a rename (`put`) or a hard link, which fails when the name exists (`create`: the
    O_EXCL of whole files).
    `put_if` compares and renames while holding an exclusive `flock` of the key's folder, so
    conditional writes of one folder are serialized across threads and processes on this disk."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def _run(self, call: Callable[[], T]) -> T:
        """`call` in a thread; a disk that fails (full, read-only, gone) is StoreUnavailable."""
        try:
            return await asyncio.to_thread(call)
        except (NotFound, AlreadyExists, VersionMismatch):
            raise
        except OSError as exc:
            raise StoreUnavailable(f"object store {self.url} failed: {exc}") from exc

    def _put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_whole(path, data)

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        await self._run(lambda: self._put(key, data))

    def _create(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_whole(path, data, exclusive=True)
        except FileExistsError:
            raise AlreadyExists(f"object {key!r} exists") from None

    async def create(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        await self._run(lambda: self._create(key, data))

    def _put_if(self, key: str, data: bytes, version: str | None) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)  # released by the close below
            try:
                current: str | None = version_of(path.read_bytes())
            except FileNotFoundError:
                current = None
            if current != version:
                if current is not None and current == version_of(data):
                    return current  # our own write, retried
                raise VersionMismatch(f"object {key!r} is at version {current}, not {version}")
            if version is None:
                self._create(key, data)  # a no-clobber link: also atomic against `create`
            else:
                self._put(key, data)
        finally:
            os.close(folder)
        return version_of(data)

    async def put_if(self, key: str, data: bytes, *, version: str | None,
                     content_type: str = "application/octet-stream") -> str:
        try:
            return await self._run(lambda: self._put_if(key, data, version))
        except AlreadyExists:
            raise VersionMismatch(f"object {key!r} exists") from None

    def _get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound("no such object") from None

    async def get(self, key: str) -> bytes:
        return await self._run(lambda: self._get(key))

    async def get_versioned(self, key: str) -> tuple[bytes, str]:
        data = await self.get(key)
        return data, version_of(data)

    async def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _list(self, prefix: str) -> list[str]:
        # Walk only the folder the prefix names (a registry listing must not walk the images).
        folder = prefix.rpartition("/")[0]
        base = self._path(folder) if folder else self.root
        keys = []
        for dirpath, _, files in os.walk(base):
            for name in files:
                if is_temporary(name):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    async def list(self, prefix: str = "") -> list[str]:
        return await self._run(lambda: self._list(prefix))

    def _list_stamped(self, prefix: str) -> dict[str, str]:
        stamps = {}
        for key in self._list(prefix):
            try:
                stat = self._path(key).stat()
            except FileNotFoundError:
                continue  # deleted since the walk
            # a write renames a new file over the key: another inode (a freed one may come back,
            # but not with the same change time)
            stamps[key] = f"{stat.st_ino}-{stat.st_size}-{stat.st_mtime_ns}-{stat.st_ctime_ns}"
        return stamps

    async def list_stamped(self, prefix: str = "") -> dict[str, str]:
        return await self._run(lambda: self._list_stamped(prefix))

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await self._run(lambda: path.unlink(missing_ok=True))

    async def ping(self) -> bool:
        return self.root.is_dir()

    async def close(self) -> None:
        return None
