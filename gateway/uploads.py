"""Reading uploaded files from multipart requests without trusting sizes, names or framing.

Every failure of the multipart parser (no or wrong boundary, malformed part headers such as a
NUL in a file name, a body cut short) is a `400 malformed_multipart` with a reason of ours;
the parser's own text is not echoed. A client that closes its connection mid-body is a
`400 client_disconnected` (nobody reads it; it is what the metrics and the audit log count),
not an internal error.

The readers report each chunk of a file to a callback (`on_chunk`), which is how the gateway
holds the bytes actually received against its budget and charges upload quotas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from shared.errors import BadRequest, DermaScanError, PayloadTooLarge, Unprocessable

_CHUNK = 64 * 1024
#: Room for the multipart framing around one file.
FRAMING_BYTES = 64 * 1024
#: What aiohttp's multipart parser raises on a malformed body.
_PARSER_ERRORS = (ValueError, AssertionError, HttpProcessingError, UnicodeError)
#: Told each chunk's size as it arrives; may raise to stop reading.
OnChunk = Callable[[int], None]


class ClientDisconnected(DermaScanError):
    """The client closed its connection before its request body arrived (400; nobody reads
    the answer, but the metrics and the audit log count it as the client's doing)."""

    status = 400
    default_code = "client_disconnected"


@contextmanager
def _parsing(where: str) -> Iterator[None]:
    try:
        yield
    except ConnectionResetError:  # aiohttp's payload error when the peer goes away mid-body
        raise ClientDisconnected(f"the client closed the connection before the body arrived ({where})",
                                 code="client_disconnected") from None
    except _PARSER_ERRORS:
        raise BadRequest(f"the multipart body is malformed ({where}); send multipart/form-data "
                         "as a browser or curl -F does", code="malformed_multipart") from None


def declared_size(request: web.Request, limit: int, *, code: str) -> int:
    """The bytes a request will bring: its Content-Length, or `limit` when it declares none.
    Raises PayloadTooLarge (`code`) when the declared length is over `limit`."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"the request is {length:,} bytes; the limit is {limit:,}", code=code)
    return limit if length is None else length


async def parts(request: web.Request, what: str) -> AsyncIterator[BodyPartReader]:
    """The form's parts, one at a time (nested multiparts are skipped). Raises Unprocessable
    for a body that is not multipart/form-data, BadRequest when it is malformed."""
    content_type = request.content_type
    if not content_type.startswith("multipart/"):
        raise Unprocessable(f"send multipart/form-data with {what} (got {content_type[:80] or 'no body'})",
                            code="missing_field")
    with _parsing("no boundary in Content-Type"):
        reader = await request.multipart()
    while True:
        with _parsing("a part's boundary or headers"):
            part = await reader.next()
        if part is None:
            return
        if isinstance(part, MultipartReader):
            await release(part)
            continue
        yield part


async def release(part: BodyPartReader | MultipartReader) -> None:
    """Skip the rest of `part`; raises BadRequest when it is malformed, ClientDisconnected
    when the client left."""
    with _parsing("a part's body"):
        await part.release()


async def read_part(part: BodyPartReader, limit: int, on_chunk: OnChunk | None = None) -> bytes:
    """The whole raw body of one part (never decoded, whatever its Content-Encoding says),
    telling `on_chunk` each chunk kept (what it raises stops the read); raises PayloadTooLarge
    (`file_too_large`) past `limit` bytes, reading no further, BadRequest when the part is
    malformed, ClientDisconnected when the client left."""
    chunks, size = [], 0
    with _parsing("a part's body"):
        while chunk := await part.read_chunk(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the file is larger than the {limit:,}-byte limit",
                                      code="file_too_large")
            if on_chunk is not None:
                on_chunk(len(chunk))
            chunks.append(chunk)
        if not part.at_eof():  # the body ended before the part's closing boundary
            raise ValueError("part cut short")
    return b"".join(chunks)


def filename(part: BodyPartReader) -> str | None:
    """The part's file name as sent, or None; raises BadRequest for an unreadable one."""
    with _parsing("a part's file name"):
        return part.filename


async def read_single_file(request: web.Request, field: str, limit: int,
                           on_chunk: OnChunk | None = None) -> bytes:
    """The bytes of multipart field `field` (`on_chunk` is told its chunks as they are read).
    Raises Unprocessable when the request is not multipart or lacks the field, PayloadTooLarge
    past `limit`, BadRequest when malformed, ClientDisconnected when the client left, and what
    `on_chunk` raises."""
    declared_size(request, limit + FRAMING_BYTES, code="file_too_large")
    async for part in parts(request, f"a {field!r} field"):
        if part.name == field:
            return await read_part(part, limit, on_chunk)
        await release(part)
    raise Unprocessable(f"the form has no {field!r} field", code="missing_field")
