"""Decoding and preprocessing: formats are sniffed from bytes, bad images fail with reasons."""

from __future__ import annotations

import io

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


@pytest.mark.parametrize("fmt,name", [("JPEG", "jpeg"), ("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif"), ("BMP", "bmp"), ("TIFF", "tiff")])
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


def test_each_policy_gives_its_own_pixels(melanoma_jpeg: bytes) -> None:
    from shared.imaging import CENTER_CROP_V1, SHADES_OF_GRAY_V2, load_for_model

    crop = load_for_model(melanoma_jpeg, (64, 64), policy=CENTER_CROP_V1)
    whole = load_for_model(melanoma_jpeg, (64, 64), policy=SHADES_OF_GRAY_V2)
    assert crop.shape == whole.shape == (64, 64, 3)
    assert np.abs(crop.astype(int) - whole.astype(int)).mean() > 2
    with pytest.raises(ValueError, match="unknown preprocessing policy"):
        load_for_model(melanoma_jpeg, (64, 64), policy="sharpen/v9")
