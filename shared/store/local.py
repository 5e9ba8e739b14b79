"""An `ObjectStore` on the local disk, for the embedded mode: one file per key."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from shared.errors import NotFound
from shared.store.base import AlreadyExists, StoreUnavailable, check_key

T = TypeVar("T")
_TMP = ".tmp-"


class LocalStore:
    """Keys map to files under `root`. Writes are atomic: a temp file, then a rename (`put`) or
    a hard link, which fails when the name exists (`create`: the O_EXCL of whole files)."""

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
        except (NotFound, AlreadyExists):
            raise
        except OSError as exc:
            raise StoreUnavailable(f"object store {self.url} failed: {exc}") from exc

    def _staged(self, path: Path, data: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return tmp

    def _put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._staged(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        await self._run(lambda: self._put(key, data))

    def _create(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._staged(path, data)
        try:
            os.link(tmp, path)  # atomic, and refuses an existing name, like open(O_CREAT | O_EXCL)
        except FileExistsError:
            raise AlreadyExists(f"object {key!r} exists") from None
        finally:
            Path(tmp).unlink(missing_ok=True)

    async def create(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        await self._run(lambda: self._create(key, data))

    def _get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no object {key!r}") from None

    async def get(self, key: str) -> bytes:
        return await self._run(lambda: self._get(key))

    async def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _list(self, prefix: str) -> list[str]:
        # Walk only the folder the prefix names (a registry listing must not walk the images).
        folder = prefix.rpartition("/")[0]
        base = self._path(folder) if folder else self.root
        keys = []
        for dirpath, _, files in os.walk(base):
            for name in files:
                if name.startswith(_TMP):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    async def list(self, prefix: str = "") -> list[str]:
        return await self._run(lambda: self._list(prefix))

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await self._run(lambda: path.unlink(missing_ok=True))

    async def ping(self) -> bool:
        return self.root.is_dir()

    async def close(self) -> None:
        return None
