"""Limits at the edge as a client sees them: slow clients, compressed bodies, pixel bombs and
many large uploads at once, each against the bound that stops it."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import math
import struct
import time
import zlib

import pytest
from PIL import Image

from gateway.image_header import dimensions
from shared.imaging import DEFAULT_MAX_PIXELS
from tests.gateway.conftest import Client, MakeClient
from tests.support.http import form
from tests.support.tokens import CONTRIBUTOR

pytestmark = pytest.mark.timeout(60)
BOUNDARY = "edge-test-boundary"


def png_header(width: int, height: int) -> bytes:
    """The first bytes of a PNG of `width` x `height` (signature, IHDR and a bit of IDAT): all
    the gateway reads; the audit's 49 MP bombs were 160 KB of such a file."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\x00" * 100_000)
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", len(idat)) + b"IDAT" + idat


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


async def connect(client: Client) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(client.server.host, client.server.port)


def multipart_head(size: int) -> bytes:
    """A /predict request announcing a `size`-byte body, with only its first part header sent."""
    return (f"POST /predict HTTP/1.1\r\nHost: test\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {size}\r\n\r\n--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="slow.jpg"\r\n\r\n'
            '\xff\xd8\xff').encode("latin-1")


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, object]]:
    """Status and JSON body of one HTTP answer read off a raw connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    return status, json.loads(await reader.readexactly(length))


async def test_slow_bodies_hold_no_prediction_slot_and_end_in_408(make_client: MakeClient,
                                                                  melanoma_jpeg: bytes) -> None:
    # The audit's reproduction: the in-flight bound at 4, and more slow clients than that.
    client = await make_client(max_in_flight=4, body_timeout_s=1.5)
    slow = [await connect(client) for _ in range(8)]
    for _, writer in slow:
        writer.write(multipart_head(200_000))
        await writer.drain()
    await asyncio.sleep(0.2)
    started = time.monotonic()
    response = await client.post("/predict", data=form(melanoma_jpeg))
    assert response.status == 200, await response.text()
    assert time.monotonic() - started < 1.5  # answered while every slow client still holds on
    for reader, writer in slow:
        status, body = await answer(reader)
        assert status == 408 and body["error"]["code"] == "body_timeout"  # type: ignore[index]
        assert "did not arrive within 1.5 s" in body["error"]["message"]  # type: ignore[index]
        assert await reader.read() == b""  # and the connection is closed
        writer.close()


async def test_a_connection_slow_to_send_its_headers_is_closed(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False, header_timeout_s=0.5)
    reader, writer = await connect(client)
    writer.write(b"POST /predict HTTP/1.1\r\nHost: test\r\n")  # and never the end of the head
    await writer.drain()
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert 0.3 < time.monotonic() - started < 3
    writer.close()


async def test_compressed_bodies_are_refused_not_inflated(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False)
    bomb = gzip.compress(b"\x00" * 50_000_000)  # 49 KB that would inflate to 50 MB
    for path, headers in (("/predict", {}), ("/upload-bulk", CONTRIBUTOR), ("/retrain", {})):
        started = time.monotonic()
        compressed = {**headers, "Content-Encoding": "gzip",
                      "Content-Type": "multipart/form-data; boundary=x"}
        response = await client.post(path, data=bomb, headers=compressed)
        assert response.status == 415, (path, await response.text())
        error = (await response.json())["error"]
        assert error["code"] == "unsupported_content_encoding" and "gzip" in error["message"]
        assert time.monotonic() - started < 1
    identity = await client.post("/predict", data=form(b"not an image"),
                                 headers={"Content-Encoding": "identity"})
    assert (await identity.json())["error"]["code"] == "not_an_image"  # identity is no encoding


async def test_images_over_the_pixel_budget_are_refused_by_the_gateway(make_client: MakeClient) -> None:
    # No worker: an image the gateway let through would wait for the 3 s deadline (504).
    client = await make_client(with_worker=False, predict_timeout_s=3, predict_rate_per_s=0)
    side = math.isqrt(DEFAULT_MAX_PIXELS) + 100  # the audit's 49 MP, against today's budget
    bomb = png_header(side, side)
    assert side * side > DEFAULT_MAX_PIXELS and len(bomb) < 2000
    started = time.monotonic()
    answers = await asyncio.gather(*(client.post("/predict",
                                                 data=form(bomb, filename="bomb.png")) for _ in range(200)))
    assert [r.status for r in answers] == [413] * 200
    assert time.monotonic() - started < 3
    error = (await answers[0].json())["error"]
    assert error["code"] == "too_many_pixels" and f"{side}x{side}" in error["message"]
    within = math.isqrt(DEFAULT_MAX_PIXELS) - 100
    fits = await client.post("/predict", data=form(png_header(within, within), filename="big.png"))
    assert fits.status == 504  # within the budget: it went on to the (absent) workers


async def test_a_jpeg_over_the_budget_is_refused_from_its_frame_header(make_client: MakeClient,
                                                                       melanoma_jpeg: bytes) -> None:
    client = await make_client(with_worker=False)
    sof = melanoma_jpeg.index(b"\xff\xc0")
    side = math.isqrt(DEFAULT_MAX_PIXELS) + 1
    huge = melanoma_jpeg[:sof + 5] + struct.pack(">HH", side, side) + melanoma_jpeg[sof + 9:]
    response = await client.post("/predict", data=form(huge))
    assert response.status == 413 and (await response.json())["error"]["code"] == "too_many_pixels"


@pytest.mark.parametrize("fmt,options",
                         [("JPEG", {}),
                          ("JPEG", {"progressive": True, "exif": b"Exif\x00\x00" + b"x" * 5000}),
                                         ("PNG", {}), ("WEBP", {}), ("WEBP", {"lossless": True}),
                                         ("WEBP", {"exif": b"Exif\x00\x00MM"})])
def test_header_sizes_match_what_pillow_reads(fmt: str, options: dict[str, object]) -> None:
    image = Image.new("RGB", (317, 123), (200, 100, 50))
    data = encoded(image, fmt, **options)
    assert dimensions(data, fmt.lower()) == (317, 123)


def test_an_unreadable_header_is_left_to_the_worker() -> None:
    assert dimensions(b"\xff\xd8\xff" + b"\x00" * 100, "jpeg") is None
    assert dimensions(b"\x89PNG\r\n\x1a\n", "png") is None
    assert dimensions(b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp") is None


async def test_upload_bytes_in_flight_are_bounded(make_client: MakeClient, melanoma_jpeg: bytes) -> None:
    client = await make_client(max_upload_bytes_in_flight=300_000, body_timeout_s=2)
    reader, writer = await connect(client)
    writer.write(multipart_head(250_000))  # holds 250 KB of the budget while it trickles
    await writer.drain()
    await asyncio.sleep(0.2)
    refused = await client.post("/predict", data=form(melanoma_jpeg + b"\x00" * 60_000))
    assert refused.status == 429, await refused.text()
    assert (await refused.json())["error"]["code"] == "upload_bytes_in_flight"
    assert refused.headers["Retry-After"] == "1"
    assert (await client.post("/predict", data=form(melanoma_jpeg))).status == 200  # a small one fits
    writer.close()  # the slow client gives up: its share comes back
    await asyncio.sleep(0.3)
    assert (await client.post("/predict", data=form(melanoma_jpeg + b"\x00" * 60_000))).status == 200
