"""Uploaded images lose their metadata; pixels survive; bad files are refused with reasons."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from shared.decode_budget import DecodeBudget
from shared.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from shared.sanitize import CLEANING_COPIES, clean_image, strip_jpeg_metadata

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
    assert clean_image(melanoma_jpeg, max_pixels=10**6).sha256 == clean_image(melanoma_jpeg,
                                                                              max_pixels=10**6).sha256


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


class AskedBudget(DecodeBudget):
    """A decode budget that remembers what each hold asked for."""

    def __init__(self) -> None:
        super().__init__(2**30)
        self.asked: list[int] = []

    @contextmanager
    def hold(self, nbytes: int, *, wait: bool = True) -> Iterator[None]:
        self.asked.append(nbytes)
        with super().hold(nbytes, wait=wait):
            yield


def test_with_a_budget_cleaning_holds_its_decoded_copies_and_frees_them(melanoma_jpeg: bytes) -> None:
    budget = AskedBudget()
    cleaned = clean_image(jpeg_with_exif(orientation=6), max_pixels=10**6, budget=budget)
    assert (cleaned.width, cleaned.height) == (40, 80)
    assert budget.asked == [CLEANING_COPIES * 4 * 80 * 40] and budget.held_bytes == 0
    with pytest.raises(BadRequest):  # a refusal frees what it held, and reads no pixel before it
        clean_image(melanoma_jpeg[:2000], max_pixels=10**6, budget=budget)
    with pytest.raises(PayloadTooLarge):
        clean_image(melanoma_jpeg, max_pixels=1000, budget=budget)
    assert len(budget.asked) == 2 and budget.held_bytes == 0


def test_strip_refuses_non_jpeg() -> None:
    with pytest.raises(BadRequest):
        strip_jpeg_metadata(b"\x89PNG....")


# What follows the image (polyglots) and what only looks like its end (issue 12).

HTML = b"<html><script>alert(1)</script></html>"


def pixels_of(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return image.tobytes()


@pytest.mark.parametrize("payload", [HTML, b"PK\x03\x04" + b"\0" * 26 + b"payload.html" + HTML])
def test_bytes_after_the_end_of_image_are_cut(melanoma_jpeg: bytes, payload: bytes) -> None:
    cleaned = clean_image(melanoma_jpeg + payload, max_pixels=10**6).data
    assert cleaned.endswith(b"\xff\xd9") and payload not in cleaned
    assert cleaned == clean_image(melanoma_jpeg, max_pixels=10**6).data
    assert pixels_of(cleaned) == pixels_of(melanoma_jpeg)


def test_an_end_marker_inside_a_comment_is_not_taken_for_the_end() -> None:
    thumbnail = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(thumbnail, "JPEG")  # has its own FFD8 ... FFD9
    image = Image.new("RGB", (96, 64), (30, 140, 90))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", comment=thumbnail.getvalue())
    original = buffer.getvalue()
    cleaned = strip_jpeg_metadata(original)
    assert thumbnail.getvalue() not in cleaned  # the comment went, whole
    assert pixels_of(cleaned) == pixels_of(original)


@pytest.mark.parametrize("options", [{"progressive": True}, {"restart_marker_blocks": 4}, {"quality": 30}])
def test_every_scan_survives_progressive_and_restart_marker_jpegs(options: dict[str, object]) -> None:
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    original = buffer.getvalue() + HTML
    cleaned = strip_jpeg_metadata(original)
    assert cleaned == buffer.getvalue()  # nothing of the image removed, nothing appended kept
    assert pixels_of(cleaned) == pixels_of(buffer.getvalue())


def test_only_the_icc_profile_of_app2_is_kept() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (5, 6, 7)).save(buffer, "JPEG", icc_profile=b"not-really-a-profile")
    data = buffer.getvalue()
    mpf = b"\xff\xe2" + (2 + 8).to_bytes(2, "big") + b"MPF\0II*\0"
    with_mpf = data[:2] + mpf + data[2:]
    cleaned = strip_jpeg_metadata(with_mpf)
    assert b"ICC_PROFILE\0" in cleaned and b"not-really-a-profile" in cleaned
    assert b"MPF\0" not in cleaned


@pytest.mark.parametrize("cut", [-2, -200])  # no EOI; the end of the scan gone too
def test_a_jpeg_without_its_end_is_refused(melanoma_jpeg: bytes, cut: int) -> None:
    with pytest.raises(BadRequest) as info:
        strip_jpeg_metadata(melanoma_jpeg[:cut])
    assert info.value.code == "corrupt_image"
