"""JPEG marker segments walked as a decoder walks them (ITU-T T.81 annex B), in C-speed steps.

Used to read a JPEG's size before Pillow touches it (Pillow skips junk between segments one byte
at a time in Python: seconds for a 20 MB file of zeros behind a JPEG signature) and to find its
real end-of-image marker (not a 0xFFD9 inside a thumbnail or in data appended after the image).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from shared.errors import BadRequest

SOI, EOI, SOS = 0xD8, 0xD9, 0xDA
#: Frame headers (SOF0-SOF15 less DHT, JPG and DAC), which carry the image size.
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length, no payload


@dataclass(frozen=True)
class Segment:
    """One marker segment: `data[start:end]` from its 0xFF through its payload (for SOS, through
    the entropy-coded data that follows it, up to the next marker)."""

    marker: int
    start: int
    end: int


def _corrupt(reason: str) -> BadRequest:
    return BadRequest(f"the JPEG is malformed: {reason}", code="corrupt_image")


def _scan_end(data: bytes, pos: int) -> int:
    """Where the entropy-coded data from `pos` ends: the next 0xFF that starts a marker (not a
    stuffed 0xFF00 nor a restart marker)."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            raise _corrupt("it ends inside its image data (truncated?)")
        following = data[pos + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            pos += 2
            continue
        return pos


def segments(data: bytes) -> Iterator[Segment]:
    """The segments after SOI, the last one EOI. Raises BadRequest (corrupt_image) when the stream
    is not a JPEG, has bytes between segments, a length past its end, or no EOI."""
    if data[:2] != b"\xff\xd8":
        raise _corrupt("no start-of-image marker")
    pos = 2
    while pos + 1 < len(data):
        if data[pos] != 0xFF:
            raise _corrupt(f"junk instead of a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == EOI:
            yield Segment(marker, pos, pos + 2)
            return
        if marker in _STANDALONE:
            yield Segment(marker, pos, pos + 2)
            pos += 2
            continue
        if pos + 4 > len(data):
            raise _corrupt("it ends inside a segment header (truncated?)")
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise _corrupt(f"segment 0xFF{marker:02X} at byte {pos} runs past the end (truncated?)")
        if marker == SOS:
            end = _scan_end(data, end)
        yield Segment(marker, pos, end)
        pos = end
    raise _corrupt("no end-of-image marker (truncated?)")


def frame_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the frame header, read before any scan. Raises BadRequest
    (corrupt_image) for a malformed JPEG or one whose first scan comes before a frame header."""
    for segment in segments(data):
        if segment.marker in SOF_MARKERS:
            if segment.end - segment.start < 9:
                raise _corrupt("frame header too short")
            at = segment.start
            return int.from_bytes(data[at + 7 : at + 9], "big"), int.from_bytes(data[at + 5 : at + 7], "big")
        if segment.marker in (SOS, EOI):
            break
    raise _corrupt("no frame header before the image data")
