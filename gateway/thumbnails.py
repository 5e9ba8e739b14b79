"""`GET /data/thumbnails/{sha256}`: a small JPEG of a catalogued image, made here on first request
and cached in the store (`thumbnails/<sha256>.jpg`), so the Data section's grid never sends the
browser a full-size image. Read-only, and only for a token of the `view` role or higher (guarded
in gateway/app.py): these are patients' images. The hash names content, so the answer never
changes; it may be kept by the browser that asked with the token (`private`, varying with
`Authorization`), never by a shared cache.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re

from aiohttp import web

from gateway.keys import STORE
from shared.catalog import Catalog
from shared.errors import BadRequest, NotFound
from shared.imaging import decode_image
from shared.store import ObjectStore
from shared.store.base import StoreUnavailable

log = logging.getLogger(__name__)

#: Longest side of a thumbnail, in pixels.
SIDE = 160
#: Kept a day by the asking browser only, and only for the same token.
CACHING = {"Cache-Control": "private, max-age=86400", "Vary": "Authorization"}
SHA256 = re.compile(r"[0-9a-f]{64}")


def thumbnail_key(sha256: str) -> str:
    return f"thumbnails/{sha256}.jpg"


def make_thumbnail(data: bytes, side: int = SIDE) -> bytes:
    """`data` (a stored image) as a JPEG at most `side` pixels on its longest side. Thread-safe;
    raises as `shared.imaging.decode_image`."""
    image = decode_image(data, draft_size=(side * 2, side * 2))
    image.thumbnail((side, side))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=82, optimize=True)
    return out.getvalue()


class Thumbnails:
    """Each thumbnail made once: concurrent requests for one image share its making (one decode of
    the full-size image), at most `AT_ONCE` images are decoded at a time, and a thumbnail the store
    cannot keep is still answered. Loop-only; the making tasks are owned here until they end."""

    AT_ONCE = 2

    def __init__(self) -> None:
        self._making: dict[str, asyncio.Task[bytes]] = {}
        self._slots = asyncio.Semaphore(self.AT_ONCE)

    async def get(self, store: ObjectStore, sha256: str) -> bytes:
        """The thumbnail's bytes; raises NotFound for an image not in the catalog, StoreUnavailable
        when the store cannot give the image."""
        try:
            return await store.get(thumbnail_key(sha256))
        except NotFound:
            pass
        task = self._making.get(sha256)
        if task is None:
            task = asyncio.create_task(self._make(store, sha256))
            self._making[sha256] = task
            task.add_done_callback(lambda done: self._ended(sha256, done))
        return await asyncio.shield(task)  # one client leaving does not stop the others' thumbnail

    def _ended(self, sha256: str, task: asyncio.Task[bytes]) -> None:
        self._making.pop(sha256, None)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have left

    async def _make(self, store: ObjectStore, sha256: str) -> bytes:
        record = await Catalog(store).find(sha256)
        if record is None:
            raise NotFound(f"no catalogued image {sha256}", code="no_such_image")
        async with self._slots:
            small = await asyncio.to_thread(make_thumbnail, await store.get(record.key))
        try:
            await store.put(thumbnail_key(sha256), small, content_type="image/jpeg")
        except StoreUnavailable as exc:
            log.warning("thumbnail of %s made but not kept (%s)", sha256, exc)
        return small


THUMBNAILS = web.AppKey("thumbnails", Thumbnails)


async def thumbnail(request: web.Request) -> web.Response:
    """The thumbnail; 400 for a name that is not a lowercase SHA-256, 404 for an image not in the
    catalog."""
    sha256 = request.match_info["sha256"]
    if not SHA256.fullmatch(sha256):
        raise BadRequest("an image is named by the lowercase hex SHA-256 of its bytes (GET /data/samples "
                         "lists them)", code="invalid_sha256")
    small = await request.app[THUMBNAILS].get(request.app[STORE], sha256)
    return web.Response(body=small, content_type="image/jpeg", headers=CACHING)
