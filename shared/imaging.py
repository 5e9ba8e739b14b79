"""Image decoding and preprocessing: the one implementation used by training and serving.

The model receives RGB pixels as float32 in [0, 255], shape (height, width, 3); scaling to the
backbone's range happens inside the model. What happens before is a named *policy*, recorded in
every model's manifest, so a model is always served the pixels it was trained on:

- `center_crop_resize_bilinear/v1`: centre-crop to the model's aspect ratio, resize.
- `resize_bilinear_shades_of_gray/v2`: resize the whole frame to the input (no crop: ISIC
  2017's copies are already squashed to 256x256, so HAM10000's 200x150 frames are squashed the
  same way and the two sources look alike), then Shades of Gray colour constancy (Minkowski
  p = 6), which takes out most of a dermatoscope's colour cast.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageOps

from shared import jpeg
from shared.decode_budget import DecodeBudget, decoded_bytes
from shared.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

#: Formats a client may send; anything else that is an image is answered 415.
SUPPORTED_FORMATS: frozenset[str] = frozenset({"jpeg", "png", "webp"})
#: Default bound on decoded pixels (the decompression-bomb guard), checked from the header
#: before decoding: 40 megapixels. Dermatoscope images are at most ~6,700 px wide in ISIC
#: (~30 MP); phone photos are mostly 12-24 MP. Decoding 40 MP costs ~120 MB of RGB and up to a
#: second or two; Pillow's own limit (a warning at 89 MP, an error past 179 MP) allowed 4x that.
DEFAULT_MAX_PIXELS = 40_000_000
#: Default bound on what one image decodes to for a prediction (the workers'
#: `DERMASCAN_MAX_DECODED_PIXELS`, which the gateway checks from the header too): a JPEG decodes at
#: the smallest of 1/2, 1/4, 1/8 that covers the model's input, a PNG or WebP whole, so this bounds
#: PNG and WebP to 4096 x 4096 (64 MiB and ~0.1 s to decode; the model sees 224 px).
DEFAULT_MAX_DECODED_PIXELS = 4096 * 4096
#: Formats Pillow decodes at full size whatever the model needs (no reduced-size decoding).
DECODED_WHOLE: frozenset[str] = frozenset({"png", "webp"})
#: Images smaller than this on either side carry too little to classify.
MIN_SIDE = 32

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"WEBP", 8, "webp"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"BM", 0, "bmp"),
    (b"II*\x00", 0, "tiff"),
    (b"MM\x00*", 0, "tiff"),
    (b"ftypheic", 4, "heic"),
    (b"ftypavif", 4, "avif"),
)


def sniff_format(head: bytes) -> str | None:
    """The image format named by the first bytes of a file, or None if it is not an image.

    Only magic numbers are read, never names or content types. 16 bytes are enough.
    """
    for magic, offset, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if name == "webp" and head[:4] != b"RIFF":
                continue
            return name
    return None


def check_format(head: bytes) -> str:
    """The sniffed format of a supported image; raises BadRequest or UnsupportedMediaType."""
    fmt = sniff_format(head)
    if fmt is None:
        raise BadRequest("the file is not an image (JPEG, PNG or WebP expected)", code="not_an_image")
    if fmt not in SUPPORTED_FORMATS:
        raise UnsupportedMediaType(
            f"{fmt.upper()} images are not supported; send JPEG, PNG or WebP",
            code="unsupported_format",
        )
    return fmt


#: Pillow's plugin names of the supported formats.
_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}


def open_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, str]:
    """Read only the header of a supported image: the lazily decoded Pillow image and its format.

    The size is checked against `max_pixels` from the header, before any pixel is decoded.
    Pillow's own bomb check (`Image.MAX_IMAGE_PIXELS`, which warns and, past twice it, raises)
    is not used: a warning turned into an exception by a filter elsewhere in the process must
    not become an unanswered error, and `warnings.catch_warnings` is not thread-safe. Raises
    only DermaScanError: BadRequest (not an image, corrupt header), UnsupportedMediaType,
    PayloadTooLarge (more than `max_pixels`). Thread-safe.
    """
    fmt = check_format(data[:16])
    if fmt == "jpeg":  # our own walk first: malformed streams fail fast, sizes before Pillow
        _check_pixels(*jpeg.frame_size(data), max_pixels)
    name = _PIL_FORMATS[fmt]
    if name not in Image.OPEN:
        Image.init()
    factory, _ = Image.OPEN[name]
    try:
        image = factory(io.BytesIO(data), "")  # what Image.open does, minus the bomb check
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # WebP checks itself
        raise PayloadTooLarge(f"image has too many pixels; the limit is {max_pixels:,}",
                              code="too_many_pixels") from exc
    except Exception as exc:  # hostile headers raise anything (struct.error, IndexError...)
        raise BadRequest(f"the image could not be decoded: {exc}", code="corrupt_image") from exc
    try:
        _check_pixels(*image.size, max_pixels)
    except PayloadTooLarge:
        image.close()
        raise
    return image, fmt


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise PayloadTooLarge(f"image has {width}x{height} pixels; the limit is {max_pixels:,}",
                              code="too_many_pixels")


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode `data` to an RGB image with EXIF orientation applied.

    `draft_size` (width, height) lets JPEG decoding skip resolution the caller will not use.
    Every failure is one of these, never another exception (not even a Pillow warning made an
    error by a filter): BadRequest (not an image, corrupt, too small), UnsupportedMediaType or
    PayloadTooLarge (more than `max_pixels`, refused from the header). Thread-safe.
    """
    image, _ = open_image(data, max_pixels=max_pixels)
    if draft_size is not None:
        _draft(image, draft_size)
    return _decode_opened(image)


def _draft(image: Image.Image, size: tuple[int, int]) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 of its size, the smallest still at least `size`
    (width, height): libjpeg then skips the rest, in time and memory. Other formats decode
    whole. Changes `image.size` to what decoding will give; reads no pixel."""
    if image.format == "JPEG":
        try:
            image.draft("RGB", size)
        except Exception as exc:  # a hostile header can make Pillow raise anything
            raise BadRequest(f"the image could not be decoded: {exc}", code="corrupt_image") from exc


def _decode_opened(image: Image.Image) -> Image.Image:
    """Decode an image `open_image` opened (and `_draft` may have shrunk) to RGB, upright.

    No copy is made that changes no pixel (an image without EXIF orientation is not copied to be
    turned, an RGB one not copied to be converted): at 40 megapixels each copy was 160 MB.
    """
    try:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        rgb = image if image.mode == "RGB" else image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        image.close()
        raise PayloadTooLarge(f"image has too many pixels: {exc}", code="too_many_pixels") from exc
    except Exception as exc:  # decoders raise OSError, ValueError, EOFError, SyntaxError...
        image.close()
        raise BadRequest(f"the image could not be decoded: {exc}", code="corrupt_image") from exc
    if rgb is not image:
        image.close()  # its pixels now, not when the caller is done with the copy
    if min(rgb.size) < MIN_SIDE:
        raise BadRequest(
            f"image is {rgb.size[0]}x{rgb.size[1]}; both sides must be at least {MIN_SIDE} pixels",
            code="too_small",
        )
    return rgb


def fit_to_input(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop `image` to the aspect ratio of `size` (height, width) and resize to it.

    Returns uint8 RGB pixels of shape (height, width, 3).
    """
    height, width = size
    src_w, src_h = image.size
    target_ratio = width / height
    if src_w / src_h > target_ratio:
        crop_w, crop_h = round(src_h * target_ratio), src_h
    else:
        crop_w, crop_h = src_w, round(src_w / target_ratio)
    left, top = (src_w - crop_w) // 2, (src_h - crop_h) // 2
    box = (left, top, left + crop_w, top + crop_h)
    resized = image.resize((width, height), Image.Resampling.BILINEAR, box=box, reducing_gap=2.0)
    return np.asarray(resized, dtype=np.uint8)


def resize_to_input(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """The whole of `image` resized to `size` (height, width), aspect ratio not kept; uint8 RGB."""
    return np.asarray(_resized(image, size), dtype=np.uint8)


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    height, width = size
    return image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)


#: The Minkowski norm of the v2 policy's colour constancy (Finlayson & Trezzi's best on their data).
SHADES_OF_GRAY_POWER = 6


def shades_of_gray(pixels: np.ndarray, power: int = SHADES_OF_GRAY_POWER) -> np.ndarray:
    """Shades of Gray colour constancy (Finlayson & Trezzi 2004) on uint8 RGB pixels.

    The illuminant of each channel is its Minkowski p-norm mean; each channel is scaled so the
    illuminant becomes grey at the same overall level. p = 1 is grey-world, p -> inf max-RGB.
    Returns uint8 pixels of the same shape.
    """
    return _balanced(Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)), power)


def _balanced(image: Image.Image, power: int) -> np.ndarray:
    """`shades_of_gray` of an RGB `image`'s pixels, as the formula
    `x = pixels as float32; illuminant = mean(x ** p over the pixels) ** (1 / p);
    out = clip(rint(x * mean(illuminant) / illuminant), 0, 255)` gives it, byte for byte, in about
    three quarters of its time (tests/shared/test_imaging.py holds the formula and checks this):
    x ** p and x * gain are looked up per byte value, computed in the same float32 arithmetic;
    each channel's sum runs over the pixels in their order in float32, as NumPy's mean over
    both axes does, but over a contiguous row instead of a stride of three."""
    pixels = np.asarray(image, dtype=np.uint8)
    height, width, _ = pixels.shape
    planes = np.ascontiguousarray(pixels.reshape(-1, 3).T)  # (3, pixels)
    sums = np.add.accumulate(_powers(power).take(planes), axis=1)[:, -1]
    # float32 / float32: the correctly rounded quotient, as NumPy's mean's float64 division is
    illuminant = np.power(sums / np.float32(height * width), 1.0 / power)
    gains = float(illuminant.mean()) / np.maximum(illuminant, 1e-3)
    scaled = np.clip(np.rint(_powers(1) * gains[:, None]), 0, 255).astype(np.uint8)  # (3, 256)
    return np.asarray(image.point(scaled.ravel().tolist()), dtype=np.uint8)


@functools.cache
def _powers(power: int) -> np.ndarray:
    """x ** power in float32 for each byte value x: what np.power gives a pixel of that value."""
    powers = np.power(np.arange(256, dtype=np.float32), power)
    powers.flags.writeable = False
    return powers


def _crop_policy(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return fit_to_input(image, size)


def _colour_constant_policy(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return _balanced(_resized(image, size), SHADES_OF_GRAY_POWER)


CENTER_CROP_V1 = "center_crop_resize_bilinear/v1"
SHADES_OF_GRAY_V2 = "resize_bilinear_shades_of_gray/v2"
#: Preprocessing policies by the name a manifest records: decoded image -> uint8 model input.
POLICIES: dict[str, Callable[[Image.Image, tuple[int, int]], np.ndarray]] = {
    CENTER_CROP_V1: _crop_policy,
    SHADES_OF_GRAY_V2: _colour_constant_policy,
}
#: The policy new models are trained with.
DEFAULT_POLICY = SHADES_OF_GRAY_V2


def check_policy(policy: str) -> str:
    """`policy` if it is known; raises ValueError naming the known ones otherwise."""
    if policy not in POLICIES:
        raise ValueError(f"unknown preprocessing policy {policy!r}; known: {', '.join(POLICIES)}")
    return policy


def load_for_model(
    data: bytes,
    size: tuple[int, int],
    *,
    policy: str = DEFAULT_POLICY,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decoded_pixels: int | None = None,
    budget: DecodeBudget | None = None,
    wait: bool = True,
) -> np.ndarray:
    """Decode encoded image bytes and prepare them for a model input of `size` (height, width)
    with the preprocessing `policy` named in the model's manifest.

    The single preprocessing entry point for the inference worker and the trainer. A JPEG is
    decoded at the smallest scale (1, 1/2, 1/4, 1/8) still at least `size`; `max_decoded_pixels`
    bounds what decoding yields (a PNG or WebP decodes whole), refused from the header; `budget`
    holds the decoded bytes while the image is decoded and prepared (waiting for room, or with
    `wait=False` refused at once when there is none). Returns uint8 (height, width, 3); raises
    as `decode_image`, PayloadTooLarge (`too_many_pixels`) past `max_decoded_pixels`, Overloaded
    (`decoder_busy`) from the budget, and ValueError for an unknown policy. Thread-safe.
    """
    prepare = POLICIES[check_policy(policy)]
    height, width = size
    image, _ = open_image(data, max_pixels=max_pixels)
    _draft(image, (width, height))
    decoded = image.size[0] * image.size[1]
    if max_decoded_pixels is not None and decoded > max_decoded_pixels:
        image.close()
        raise PayloadTooLarge(
            f"image decodes to {image.size[0]}x{image.size[1]} pixels; the limit is {max_decoded_pixels:,} "
            "(a JPEG decodes at the scale the model needs, a PNG or WebP whole)", code="too_many_pixels")
    with budget.hold(decoded_bytes(decoded), wait=wait) if budget is not None else contextlib.nullcontext():
        rgb = _decode_opened(image)
        try:
            return prepare(rgb, size)
        finally:  # the decoded pixels freed now, while the budget still counts them
            rgb.close()
            image.close()
