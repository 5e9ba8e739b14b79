"""Decoding and preprocessing: formats are sniffed from bytes, bad images fail with reasons."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from shared.imaging import check_format, decode_image, fit_to_input, load_for_model, sniff_format


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


RED = Image.new("RGB", (64, 48), (200, 30, 30))


@pytest.mark.parametrize("fmt,name",
                         [("JPEG", "jpeg"), ("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif"), ("BMP", "bmp"),
                          ("TIFF", "tiff")])
def test_sniff_format_reads_magic_bytes(fmt: str, name: str) -> None:
    assert sniff_format(encode(RED, fmt)[:16]) == name


def test_unsupported_and_non_images_are_refused_with_reasons() -> None:
    with pytest.raises(UnsupportedMediaType):
        check_format(encode(RED, "GIF"))
    with pytest.raises(BadRequest, match="not an image"):
        check_format(b"%PDF-1.7 hello")


def test_truncated_jpeg_is_corrupt(melanoma_jpeg: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        decode_image(melanoma_jpeg[: len(melanoma_jpeg) // 3])
    assert info.value.code == "corrupt_image"


def test_too_many_pixels_is_refused_before_decoding() -> None:
    with pytest.raises(PayloadTooLarge):
        decode_image(encode(Image.new("RGB", (2000, 2000)), "PNG"), max_pixels=1_000_000)


def test_tiny_images_are_refused() -> None:
    with pytest.raises(BadRequest, match="at least"):
        decode_image(encode(Image.new("RGB", (8, 8)), "PNG"))


def test_exif_orientation_is_applied() -> None:
    wide = Image.new("RGB", (80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    rotated = decode_image(encode(wide, "JPEG", exif=exif.tobytes()))
    assert rotated.size == (40, 80)


def test_fit_to_input_centre_crops_to_the_target_aspect() -> None:
    image = Image.new("RGB", (300, 100), (0, 0, 0))
    image.paste((255, 255, 255), (100, 0, 200, 100))  # white centre square
    pixels = fit_to_input(image, (50, 50))
    assert pixels.shape == (50, 50, 3) and pixels.dtype == np.uint8
    assert pixels.mean() > 250  # only the centre survived the crop


def test_load_for_model_gives_the_model_input(melanoma_jpeg: bytes) -> None:
    pixels = load_for_model(melanoma_jpeg, (96, 128))
    assert pixels.shape == (96, 128, 3)
    assert 20 < pixels.mean() < 240


def test_shades_of_gray_removes_a_colour_cast() -> None:
    from shared.imaging import shades_of_gray

    rng = np.random.default_rng(0)
    scene = rng.integers(40, 200, (64, 64, 1)).repeat(3, axis=2).astype(np.float64)
    cast = np.clip(scene * np.array([1.25, 1.0, 0.7]), 0, 255).astype(np.uint8)  # a warm dermatoscope
    corrected = shades_of_gray(cast).astype(np.float64)
    means = corrected.reshape(-1, 3).mean(axis=0)
    assert means.max() / means.min() < 1.03  # grey again
    before = cast.reshape(-1, 3).astype(np.float64).mean(axis=0)
    assert before.max() / before.min() > 1.6
    assert shades_of_gray(cast).dtype == np.uint8


def shades_of_gray_formula(pixels: np.ndarray, power: int = 6) -> np.ndarray:
    """The v2 policy's colour constancy as it was written when models were first trained with it:
    what `shades_of_gray` must give, byte for byte."""
    x = pixels.astype(np.float32)
    illuminant = np.power(np.mean(np.power(x, power), axis=(0, 1)), 1.0 / power)
    gains = float(illuminant.mean()) / np.maximum(illuminant, 1e-3)
    return np.asarray(np.clip(np.rint(x * gains), 0, 255).astype(np.uint8))


def fixture_photos() -> list[Image.Image]:
    root = Path(__file__).resolve().parents[1] / "fixtures"
    images = []
    for path in sorted([*root.glob("ham10000/**/*.jpg"), *root.glob("isic2017*/**/*.jpg")]):
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


def test_shades_of_gray_gives_the_formulas_bytes() -> None:
    """Models are trained and served on these bytes: the fast path must not move one of them."""
    from shared.imaging import SHADES_OF_GRAY_POWER, shades_of_gray

    rng = np.random.default_rng(7)
    shapes = [(224, 224, 3), (97, 131, 3), (1, 1, 3)]
    cases = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in shapes]
    no_green = np.dstack([np.full((8, 8), 90), np.zeros((8, 8)), np.full((8, 8), 250)]).astype(np.uint8)
    cases += [np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8), no_green]
    photos = fixture_photos()
    assert len(photos) >= 20
    cases += [np.asarray(photo.resize((224, 224), Image.Resampling.BILINEAR)) for photo in photos]
    for pixels in cases:
        for power in (SHADES_OF_GRAY_POWER, 1, 3):
            assert np.array_equal(shades_of_gray(pixels, power), shades_of_gray_formula(pixels, power))


def test_the_colour_constant_policy_is_the_formula_after_the_resize(melanoma_jpeg: bytes) -> None:
    from shared.imaging import SHADES_OF_GRAY_V2, resize_to_input

    with Image.open(io.BytesIO(melanoma_jpeg)) as photo:
        png = encode(photo.convert("RGB"), "PNG")  # a PNG decodes whole: no JPEG draft scale to mirror
    with Image.open(io.BytesIO(png)) as image:
        resized = resize_to_input(image.convert("RGB"), (224, 224))
    assert np.array_equal(load_for_model(png, (224, 224), policy=SHADES_OF_GRAY_V2),
                          shades_of_gray_formula(resized))


def test_each_policy_gives_its_own_pixels(melanoma_jpeg: bytes) -> None:
    from shared.imaging import CENTER_CROP_V1, SHADES_OF_GRAY_V2, load_for_model

    crop = load_for_model(melanoma_jpeg, (64, 64), policy=CENTER_CROP_V1)
    whole = load_for_model(melanoma_jpeg, (64, 64), policy=SHADES_OF_GRAY_V2)
    assert crop.shape == whole.shape == (64, 64, 3)
    assert np.abs(crop.astype(int) - whole.astype(int)).mean() > 2
    with pytest.raises(ValueError, match="unknown preprocessing policy"):
        load_for_model(melanoma_jpeg, (64, 64), policy="sharpen/v9")


# Decompression bombs and hostile bytes (issue 12): every decode failure is a DermaScanError,
# sizes are judged from the header, and Pillow's global limit and warnings play no part.

def bomb_png(width: int, height: int) -> bytes:
    """A ~70-byte PNG whose header claims `width` x `height` pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT",
                                                                 zlib.compress(b"\0" * 64)) + chunk(b"IEND",
                                                                                                    b"")


@pytest.mark.parametrize("side",
                         [7072, 10_000, 100_000])  # over our 40 MP; Pillow's warning band; its error band
def test_a_decompression_bomb_is_refused_from_its_header_as_too_many_pixels(side: int) -> None:
    import time

    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge) as info:
        decode_image(bomb_png(side, side))
    assert info.value.code == "too_many_pixels" and f"{side}x{side}" in info.value.message
    assert time.perf_counter() - started < 0.5  # nothing was decoded


def test_the_pixel_budget_fits_the_largest_dermatoscope_images() -> None:
    from shared.imaging import DEFAULT_MAX_PIXELS, open_image

    assert DEFAULT_MAX_PIXELS == 40_000_000
    image, fmt = open_image(bomb_png(6700, 4500))  # ISIC's widest, ~30 MP: header accepted
    assert fmt == "png" and image.size == (6700, 4500)
    with pytest.raises(PayloadTooLarge):
        open_image(bomb_png(8000, 5001))


def test_warnings_made_errors_and_pillows_global_limit_change_nothing(
        monkeypatch: pytest.MonkeyPatch, melanoma_jpeg: bytes) -> None:
    import warnings

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # smaller than any real image
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. python -W error: every warning raises
        assert decode_image(melanoma_jpeg).size == (200, 150)
        with pytest.raises(PayloadTooLarge):
            decode_image(bomb_png(10_000, 10_000))
        with pytest.raises(PayloadTooLarge):
            decode_image(encode(Image.new("RGB", (400, 300)), "WEBP"), max_pixels=100_000)


def test_junk_behind_a_jpeg_signature_is_refused_at_once() -> None:
    import time

    started = time.perf_counter()
    with pytest.raises(BadRequest) as info:
        decode_image(b"\xff\xd8\xff\xe0" + bytes(20_000_000))  # Pillow would skip it byte by byte
    assert info.value.code == "corrupt_image"
    assert time.perf_counter() - started < 0.5


def test_a_jpeg_frame_larger_than_the_budget_is_refused_before_pillow_reads_it(melanoma_jpeg: bytes) -> None:
    from shared.jpeg import SOF_MARKERS, segments

    sof = next(s.start for s in segments(melanoma_jpeg) if s.marker in SOF_MARKERS)
    huge = bytearray(melanoma_jpeg)
    huge[sof + 5 : sof + 9] = (60_000).to_bytes(2, "big") + (60_000).to_bytes(2, "big")
    with pytest.raises(PayloadTooLarge, match="60000x60000"):
        decode_image(bytes(huge))
