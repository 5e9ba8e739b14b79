"""`GET /data/thumbnails/{sha256}`: a small JPEG of a catalogued image, made here on first request
and cached in the store (`thumbnails/<sha256>.jpg`), so the Data section's grid never sends the
browser a full-size image. Open and read-only; the hash names content, so the answer never
changes and may be cached for good.
"""

from __future__ import annotations

import asyncio
import io
import re

from aiohttp import web

from gateway.keys import STORE
from shared.catalog import Catalog
from shared.errors import BadRequest, NotFound
from shared.imaging import decode_image

#: Longest side of a thumbnail, in pixels.
SIDE = 160
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


async def thumbnail(request: web.Request) -> web.Response:
    """The thumbnail; 400 for a name that is not a lowercase SHA-256, 404 for an image not in the
    catalog."""
    sha256 = request.match_info["sha256"]
    if not SHA256.fullmatch(sha256):
        raise BadRequest("an image is named by the lowercase hex SHA-256 of its bytes (GET /data/samples "
                         "lists them)", code="invalid_sha256")
    store = request.app[STORE]
    key = thumbnail_key(sha256)
    try:
        small = await store.get(key)
    except NotFound:
        record = await Catalog(store).find(sha256)
        if record is None:
            raise NotFound(f"no catalogued image {sha256}", code="no_such_image") from None
        small = await asyncio.to_thread(make_thumbnail, await store.get(record.key))
        await store.put(key, small, content_type="image/jpeg")
    return web.Response(body=small, content_type="image/jpeg",
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})
