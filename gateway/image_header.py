"""An image's width and height read from its first bytes, without decoding it, so the gateway
can refuse an image over the pixel budget before publishing it to a worker.

Only a well-formed header is read: anything unexpected gives None, and the worker, which
checks the size again from the header before it decodes, has the last word (it names corrupt
images better). The JPEG walk looks at most `MAX_JPEG_SEGMENTS` segments, so its cost stays
bounded whatever the file holds.
"""

from __future__ import annotations

import struct

from shared.errors import PayloadTooLarge
from shared.imaging import DEFAULT_MAX_PIXELS

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


def check_pixels(data: bytes, image_format: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Raises PayloadTooLarge (`too_many_pixels`) when the header says the image has more
    than `max_pixels` pixels, the bound every worker applies before decoding."""
    size = dimensions(data, image_format)
    if size is not None and size[0] * size[1] > max_pixels:
        raise PayloadTooLarge(f"the image is {size[0]}x{size[1]} pixels; the limit is {max_pixels:,}",
                              code="too_many_pixels")
