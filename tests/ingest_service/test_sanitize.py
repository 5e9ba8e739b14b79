"""Uploaded images lose their metadata; pixels survive; bad files are refused with reasons."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from shared.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from shared.sanitize import clean_image, strip_jpeg_metadata

GPS = 0x8825


def jpeg_with_exif(orientation: int = 1) -> bytes:
    image = Image.new("RGB", (80, 40), (10, 120, 200))
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "PatientCam"  # camera make: identifying
    exif[GPS] = {1: "N", 2: (59.0, 20.0, 0.0)}
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes(), comment=b"patient 1234")
    return buffer.getvalue()


def test_jpeg_metadata_is_cut_out_without_touching_pixels() -> None:
    original = jpeg_with_exif()
    cleaned = clean_image(original, max_pixels=10**6)
    assert b"PatientCam" in original and b"PatientCam" not in cleaned.data
    assert b"patient 1234" not in cleaned.data
    with Image.open(io.BytesIO(cleaned.data)) as image:
        assert not image.getexif()
        assert image.tobytes() == Image.open(io.BytesIO(original)).tobytes()
    assert cleaned.format == "jpeg" and (cleaned.width, cleaned.height) == (80, 40)


def test_exif_orientation_is_applied_before_stripping() -> None:
    cleaned = clean_image(jpeg_with_exif(orientation=6), max_pixels=10**6)
    with Image.open(io.BytesIO(cleaned.data)) as image:
        assert image.size == (40, 80) and not image.getexif()


def test_png_text_chunks_are_dropped() -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "name: Jane Doe")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, "PNG", pnginfo=info)
    cleaned = clean_image(buffer.getvalue(), max_pixels=10**6)
    assert b"Jane Doe" not in cleaned.data and cleaned.format == "png"


def test_same_bytes_same_hash(melanoma_jpeg: bytes) -> None:
    assert clean_image(melanoma_jpeg, max_pixels=10**6).sha256 == clean_image(melanoma_jpeg, max_pixels=10**6).sha256


@pytest.mark.parametrize("data,error", [
    (b"", BadRequest), (b"not an image at all", BadRequest), (b"GIF89a" + b"\0" * 64, UnsupportedMediaType)])
def test_bad_files_are_refused(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        clean_image(data, max_pixels=10**6)


def test_truncated_and_oversized_images_are_refused(melanoma_jpeg: bytes) -> None:
    with pytest.raises(BadRequest):
        clean_image(melanoma_jpeg[:2000], max_pixels=10**6)
    with pytest.raises(PayloadTooLarge):
        clean_image(melanoma_jpeg, max_pixels=1000)


def test_strip_refuses_non_jpeg() -> None:
    with pytest.raises(BadRequest):
        strip_jpeg_metadata(b"\x89PNG....")
