"""An image's width and height read from its first bytes, without decoding it, so the gateway
can refuse an image over the pixel budget before publishing it to a worker: more than
`DEFAULT_MAX_PIXELS` in any format, and, for a PNG or WebP (decoded whole), more than the
workers decode (`DEFAULT_MAX_DECODED_PIXELS`, their `DERMASCAN_MAX_DECODED_PIXELS` default), so
an image every worker would refuse never waits in the queue.

Only a well-formed header is read: anything unexpected gives None, and the worker, which
checks the size again from the header before it decodes, has the last word (it names corrupt
images better). The JPEG walk looks at most `MAX_JPEG_SEGMENTS` segments, so its cost stays
bounded whatever the file holds.
"""

from __future__ import annotations

import struct

from shared.errors import PayloadTooLarge
from shared.imaging import DECODED_WHOLE, DEFAULT_MAX_DECODED_PIXELS, DEFAULT_MAX_PIXELS

#: JPEG segments walked before giving up (EXIF, ICC and the like come before the frame header).
MAX_JPEG_SEGMENTS = 256
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (not DHT, JPG, DAC)
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length


def _png(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"IHDR" or len(data) < 24:
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _jpeg(data: bytes) -> tuple[int, int] | None:
    pos = 2
    for _ in range(MAX_JPEG_SEGMENTS):
        if pos + 4 > len(data) or data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or scan data before any frame header
            return None
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker in _SOF:
            if length < 7 or pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height
        pos += 2 + length
    return None


_READERS = {"png": _png, "webp": _webp, "jpeg": _jpeg}


def dimensions(data: bytes, image_format: str) -> tuple[int, int] | None:
    """(width, height) from the header of `data`, an image of `image_format` (jpeg, png or
    webp, as sniffed), or None when the header cannot be read."""
    reader = _READERS.get(image_format)
    return reader(data) if reader is not None else None


def check_pixels(data: bytes, image_format: str, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_decoded_pixels: int = DEFAULT_MAX_DECODED_PIXELS) -> None:
    """Raises PayloadTooLarge (`too_many_pixels`) when the header says the image has more
    than `max_pixels` pixels, or is a PNG or WebP of more than `max_decoded_pixels`: the bounds
    every worker applies before decoding (a JPEG decodes at a reduced scale, so only the first
    bounds it)."""
    size = dimensions(data, image_format)
    if size is None:
        return
    width, height = size
    if width * height > max_pixels:
        raise PayloadTooLarge(f"the image is {width}x{height} pixels; the limit is {max_pixels:,}",
                              code="too_many_pixels")
    if image_format in DECODED_WHOLE and width * height > max_decoded_pixels:
        raise PayloadTooLarge(f"the image is {width}x{height} pixels, and a {image_format.upper()} decodes "
                              f"whole: the limit is {max_decoded_pixels:,} pixels; send it smaller or as a "
                              "JPEG", code="too_many_pixels")
