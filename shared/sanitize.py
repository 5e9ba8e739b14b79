"""Validate one uploaded image and remove what it should not carry (EXIF, GPS, comments).

JPEGs keep their exact compressed bytes (metadata segments are cut out) unless their EXIF
orientation has to be applied, which needs one re-encode; PNG and WebP are re-encoded without
metadata (PNG losslessly).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image, ImageOps

from shared.errors import BadRequest
from shared.imaging import decode_image, sniff_format

# JPEG APPn/COM segments that are kept: APP0 (JFIF), APP2 (ICC colour profile), APP14 (Adobe
# colour transform, needed to decode CMYK). Everything else (APP1 EXIF/XMP, APP13 IPTC, COM…) goes.
_KEEP_APP = {0xE0, 0xE2, 0xEE}
_ORIENTATION = 0x0112


@dataclass(frozen=True)
class CleanImage:
    data: bytes
    format: str
    width: int
    height: int
    sha256: str


def strip_jpeg_metadata(data: bytes) -> bytes:
    """The same JPEG without APP1/APP3-13/APP15/COM segments; pixels are untouched."""
    if data[:2] != b"\xff\xd8":
        raise BadRequest("not a JPEG stream", code="corrupt_image")
    out, pos = [data[:2]], 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise BadRequest("malformed JPEG segment", code="corrupt_image")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the rest is image data
            out.append(data[pos:])
            return b"".join(out)
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segment = data[pos : pos + 2 + length]
        is_metadata = marker == 0xFE or (0xE0 <= marker <= 0xEF and marker not in _KEEP_APP)
        if not is_metadata:
            out.append(segment)
        pos += 2 + length
    raise BadRequest("the JPEG has no image data", code="corrupt_image")


def _reencode(image: Image.Image, image_format: str) -> bytes:
    upright = ImageOps.exif_transpose(image)
    upright.info = {}
    buffer = io.BytesIO()
    if image_format == "jpeg":
        upright.convert("RGB").save(buffer, "JPEG", quality=95)
    elif image_format == "png":
        upright.save(buffer, "PNG")
    else:
        upright.save(buffer, "WEBP", quality=95)
    return buffer.getvalue()


def clean_image(data: bytes, *, max_pixels: int) -> CleanImage:
    """Validate `data` (format from its bytes, full decode, size bounds) and return it without
    metadata. Raises BadRequest, UnsupportedMediaType or PayloadTooLarge with the reason."""
    if not data:
        raise BadRequest("the file is empty", code="empty_file")
    rgb = decode_image(data, max_pixels=max_pixels)  # validates format, pixels, corruption, size
    image_format = sniff_format(data[:16]) or ""
    with Image.open(io.BytesIO(data)) as original:
        orientation = original.getexif().get(_ORIENTATION, 1)
        if image_format == "jpeg" and orientation in (0, 1):
            cleaned = strip_jpeg_metadata(data)
        else:
            original.load()
            cleaned = _reencode(original, image_format)
    return CleanImage(cleaned, image_format, rgb.size[0], rgb.size[1], hashlib.sha256(cleaned).hexdigest())
