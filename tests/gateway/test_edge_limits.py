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
from shared.imaging import DEFAULT_MAX_DECODED_PIXELS, DEFAULT_MAX_PIXELS
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


def webp_header(width: int, height: int) -> bytes:
    """The first bytes of an extended WebP (VP8X) of `width` x `height`."""
    vp8x = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return (b"RIFF" + struct.pack("<I", 4 + 8 + len(vp8x)) + b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x))
            + vp8x)


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


async def connect(client: Client,
                  source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection to the gateway from `source` (any 127.x address: another caller)."""
    return await asyncio.open_connection(client.server.host, client.server.port, local_addr=(source, 0))


def multipart_head(size: int) -> bytes:
    """A /predict request announcing a `size`-byte body, with only its first part header sent."""
    return (f"POST /predict HTTP/1.1\r\nHost: localhost\r\n"
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
    within = math.isqrt(DEFAULT_MAX_DECODED_PIXELS)
    fits = await client.post("/predict", data=form(png_header(within, within), filename="big.png"))
    assert fits.status == 504  # within the budget: it went on to the (absent) workers


async def test_a_png_or_webp_larger_than_the_workers_decode_is_refused_by_the_gateway(
        make_client: MakeClient, melanoma_jpeg: bytes) -> None:
    """A PNG or WebP decodes whole, so one over the workers' DERMASCAN_MAX_DECODED_PIXELS (4096 x
    4096) is refused from its header here, never queued; a JPEG of as many pixels decodes at 1/8
    of its size and goes on."""
    client = await make_client(with_worker=False, predict_timeout_s=1, predict_rate_per_s=0)
    side = math.isqrt(DEFAULT_MAX_DECODED_PIXELS)
    for image in (png_header(side + 1, side), webp_header(side, side + 1)):
        response = await client.post("/predict", data=form(image, filename="big.img"))
        assert response.status == 413, await response.text()
        error = (await response.json())["error"]
        assert error["code"] == "too_many_pixels" and "decodes whole" in error["message"], error
    sof = melanoma_jpeg.index(b"\xff\xc0")
    jpeg = melanoma_jpeg[:sof + 5] + struct.pack(">HH", side + 1, side + 1) + melanoma_jpeg[sof + 9:]
    assert (await client.post("/predict", data=form(jpeg))).status == 504  # to the (absent) workers


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


def whole_request(image: bytes) -> bytes:
    """A complete /predict request carrying `image`, as raw bytes."""
    body = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="slow.jpg"\r\n\r\n'
            .encode() + image + f"\r\n--{BOUNDARY}--\r\n".encode())
    return (f"POST /predict HTTP/1.1\r\nHost: localhost\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def test_a_declared_length_holds_nothing_until_its_bytes_arrive(make_client: MakeClient,
                                                                      melanoma_jpeg: bytes) -> None:
    client = await make_client(max_upload_bytes_in_flight=250_000, max_upload_bytes=200_000,
                               max_file_bytes=200_000, max_upload_bytes_in_flight_per_caller=200_000)
    big = melanoma_jpeg + b"\x00" * 150_000
    # twenty callers announce the largest body and send no more of it: they hold nothing
    idle = [await connect(client, f"127.0.0.{10 + i}") for i in range(20)]
    for _, writer in idle:
        writer.write(multipart_head(200_000))
        await writer.drain()
    await asyncio.sleep(0.2)
    assert (await client.post("/predict", data=form(big))).status == 200
    # what did arrive is held (but for the last chunk, which the parser keeps to look for the
    # boundary): 150 KB sent, then a stall
    reader, writer = await connect(client, "127.0.0.2")
    writer.write(multipart_head(200_000) + b"\x00" * 150_000)
    await writer.drain()
    await asyncio.sleep(0.3)
    refused = await client.post("/predict", data=form(big))
    assert refused.status == 429, await refused.text()
    assert (await refused.json())["error"]["code"] == "upload_bytes_in_flight"
    assert refused.headers["Retry-After"] == "1"
    assert (await client.post("/predict", data=form(melanoma_jpeg))).status == 200  # a small one fits
    writer.close()  # the slow client gives up: its bytes come back
    await asyncio.sleep(0.3)
    assert (await client.post("/predict", data=form(big))).status == 200
    for _, idler in idle:
        idler.close()


async def test_one_caller_cannot_take_the_budget_from_the_rest(make_client: MakeClient,
                                                               melanoma_jpeg: bytes) -> None:
    client = await make_client(max_upload_bytes=100_000, max_file_bytes=100_000,
                               max_upload_bytes_in_flight_per_caller=100_000)
    _, holding = await connect(client, "127.0.0.2")
    holding.write(multipart_head(100_000) + b"\x00" * 90_000)  # 90 KB of its 100 KB share, then a stall
    await holding.drain()
    await asyncio.sleep(0.3)
    reader, writer = await connect(client, "127.0.0.2")
    writer.write(whole_request(melanoma_jpeg + b"\x00" * 40_000))  # the same address asks for more
    status, body = await asyncio.wait_for(answer(reader), 5)
    assert status == 429 and body["error"]["code"] == "upload_bytes_per_caller", body  # type: ignore[index]
    # everyone else still has the rest of the budget
    assert (await client.post("/predict", data=form(melanoma_jpeg + b"\x00" * 50_000))).status == 200
    holding.close()
    writer.close()


async def test_a_stalled_body_is_let_go_after_one_window_a_steady_slow_one_is_not(
        make_client: MakeClient, melanoma_jpeg: bytes) -> None:
    client = await make_client(min_receive_rate_bytes_per_s=2000, receive_rate_window_s=0.5,
                               body_timeout_s=20)
    stalled_reader, stalled = await connect(client, "127.0.0.2")
    stalled.write(multipart_head(100_000) + b"\x00" * 5000)  # a good start, then nothing
    await stalled.drain()
    started = time.monotonic()

    async def steady() -> tuple[int, dict[str, object]]:  # 4,000 bytes a second, twice the minimum
        reader, writer = await connect(client, "127.0.0.3")
        request = whole_request(melanoma_jpeg + b"\x00" * 6000)
        for at in range(0, len(request), 1000):
            writer.write(request[at:at + 1000])
            await writer.drain()
            await asyncio.sleep(0.25)
        try:
            return await answer(reader)
        finally:
            writer.close()

    steady_answer = asyncio.ensure_future(steady())
    status, body = await asyncio.wait_for(answer(stalled_reader), 5)
    assert status == 408 and body["error"]["code"] == "body_too_slow", body  # type: ignore[index]
    assert time.monotonic() - started < 2  # one window after its last bytes, not the 20 s deadline
    status, body = await steady_answer
    assert status == 200, body
    assert time.monotonic() - started > 2  # it took its time, and kept its connection throughout
    stalled.close()
