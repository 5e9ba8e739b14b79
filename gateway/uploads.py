"""Reading uploaded files from multipart requests without trusting sizes or names."""

from __future__ import annotations

from aiohttp import BodyPartReader, web

from shared.errors import PayloadTooLarge, Unprocessable

_CHUNK = 64 * 1024


async def read_part(part: BodyPartReader, limit: int) -> bytes:
    """The whole body of one part; raises PayloadTooLarge past `limit` bytes, reading no further."""
    chunks, size = [], 0
    while chunk := await part.read_chunk(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the file is larger than the {limit:,}-byte limit", code="file_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_single_file(request: web.Request, field: str, limit: int) -> bytes:
    """The bytes of multipart field `field`. Raises Unprocessable when the request is not
    multipart or lacks the field, PayloadTooLarge past `limit`."""
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        raise PayloadTooLarge(
            f"the request is {request.content_length:,} bytes; the limit is {limit:,}", code="file_too_large"
        )
    if not request.content_type.startswith("multipart/"):
        raise Unprocessable(
            f"send multipart/form-data with a {field!r} field (got {request.content_type or 'no body'})",
            code="missing_field",
        )
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if isinstance(part, BodyPartReader) and part.name == field:
            return await read_part(part, limit)
        await part.release()
    raise Unprocessable(f"the form has no {field!r} field", code="missing_field")
