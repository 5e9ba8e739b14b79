"""Validate one uploaded image and remove what it should not carry (EXIF, GPS, comments).

JPEGs keep their exact compressed bytes (metadata segments are cut out, and whatever follows
the end-of-image marker) unless their EXIF orientation has to be applied, which needs one
re-encode; PNG and WebP are re-encoded without metadata (PNG losslessly), which also drops
anything appended to them.

Cleaning decodes the whole image (a PNG of 131 KB may be 40 MP, 160 MB decoded), so with a
`DecodeBudget` it holds the bytes it decodes, `CLEANING_COPIES` full-size images, for as long as
it runs: the same bound, and the same return of freed memory to the system, as predictions'
decoding (`shared.decode_budget`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import dataclass

from PIL import Image, ImageOps

from shared import jpeg
from shared.decode_budget import DecodeBudget, decoded_bytes
from shared.errors import BadRequest, DermaScanError
from shared.imaging import decode_image, open_image

# JPEG APPn segments that are kept, by marker and identifier: APP0 JFIF/JFXX, APP2 ICC colour
# profile, APP14 Adobe (colour transform, needed to decode CMYK). Every other APPn (APP1 EXIF/XMP,
# APP2 MPF, APP13 IPTC...), COM and the reserved markers go.
_KEEP_APP: dict[int, tuple[bytes, ...]] = {0xE0: (b"JFIF\0", b"JFXX\0"), 0xE2: (b"ICC_PROFILE\0",),
                                           0xEE: (b"Adobe",)}
_ORIENTATION = 0x0112
#: Full-size images cleaning holds at once at most: the decoded original, its upright copy and
#: that copy converted to RGB (a rotated JPEG re-encoded).
CLEANING_COPIES = 3


@dataclass(frozen=True)
class CleanImage:
    data: bytes
    format: str
    width: int
    height: int
    sha256: str


def _keeps(data: bytes, segment: jpeg.Segment) -> bool:
    """Whether a segment is needed to decode: frame, tables, scans, restart markers, EOI, and the
    APPn segments of `_KEEP_APP`."""
    if segment.marker in _KEEP_APP:
        return data[segment.start + 4 : segment.end].startswith(_KEEP_APP[segment.marker])
    return 0xC0 <= segment.marker <= 0xDF  # SOFn, DHT, DAC, RSTn, EOI, SOS, DQT, DNL, DRI, DHP, EXP


def strip_jpeg_metadata(data: bytes) -> bytes:
    """The same JPEG without metadata segments and without anything after its end-of-image
    marker (an appended HTML page or zip, a second MPF picture); the compressed pixels are
    copied, not re-encoded. Segments are walked one by one (`shared.jpeg`), so the EOI found is
    the real one. Raises BadRequest (corrupt_image) for a stream that is not a complete JPEG."""
    kept = [data[s.start : s.end] for s in jpeg.segments(data) if _keeps(data, s)]
    return b"\xff\xd8" + b"".join(kept)


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


def clean_image(data: bytes, *, max_pixels: int, budget: DecodeBudget | None = None) -> CleanImage:
    """Validate `data` (format from its bytes, full decode, size bounds) and return it without
    metadata; with a `budget`, hold `CLEANING_COPIES` times the image's decoded bytes of it while
    cleaning (waiting for room: this blocks, so call it from a thread). Raises only
    DermaScanError: BadRequest, UnsupportedMediaType or PayloadTooLarge with the reason.
    Thread-safe."""
    if not data:
        raise BadRequest("the file is empty", code="empty_file")
    if budget is None:
        return _clean(data, max_pixels)
    header, _ = open_image(data, max_pixels=max_pixels)  # the size, from the header only
    with contextlib.closing(header):
        width, height = header.size
    with budget.hold(CLEANING_COPIES * decoded_bytes(width * height)):
        return _clean(data, max_pixels)


def _clean(data: bytes, max_pixels: int) -> CleanImage:
    rgb = decode_image(data, max_pixels=max_pixels)  # validates format, pixels, corruption, size
    width, height = rgb.size
    rgb.close()  # only its size is needed: the re-encode below decodes afresh
    original, image_format = open_image(data, max_pixels=max_pixels)
    try:
        with original:
            orientation = original.getexif().get(_ORIENTATION, 1)
            if image_format == "jpeg" and orientation in (0, 1):
                cleaned = strip_jpeg_metadata(data)
            else:
                original.load()
                cleaned = _reencode(original, image_format)
    except DermaScanError:
        raise
    except Exception as exc:  # hostile EXIF or modes Pillow cannot convert
        raise BadRequest(f"the image could not be cleaned: {exc}", code="corrupt_image") from exc
    return CleanImage(cleaned, image_format, width, height, hashlib.sha256(cleaned).hexdigest())
