"""A bound on the memory that image decoding holds at once, in bytes of decoded pixels.

A PNG of 131 KB can decode to 40 megapixels: the file says nothing of what decoding it costs.
Counting decodes (threads) bounds nothing when each may be that large; counting the bytes they
decode to does. Pillow keeps an RGB pixel in 4 bytes, so an image of w x h pixels holds
`4 * w * h` bytes while it is decoded and prepared (`decoded_bytes`).

Freed is not returned: Pillow allocates a large image in 16 MiB blocks, which glibc serves from
its arenas once an earlier free has raised its mmap threshold, and keeps. A worker that decoded
ten 40-megapixel PNGs on two threads stayed 700 MB larger for good. So the budget hands freed
memory back to the system (glibc's `malloc_trim`) after each large decode it held.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from shared.errors import Overloaded

#: Bytes Pillow holds per decoded pixel (RGB and RGBA are stored 4 bytes a pixel).
BYTES_PER_PIXEL = 4


#: A decode holding this many bytes or more is followed by a trim (Pillow's block size).
TRIM_FROM_BYTES = 16 * 2**20


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None under another C library (musl, macOS): nothing to trim."""
    with contextlib.suppress(OSError, AttributeError):
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
        return trim
    return None


_MALLOC_TRIM = _find_malloc_trim()


def decoded_bytes(pixels: int) -> int:
    """Bytes that decoding an image of `pixels` pixels holds (Pillow's 4 bytes a pixel)."""
    return pixels * BYTES_PER_PIXEL


class DecodeBudget:
    """Bytes of decoded pixels held at once by every thread that decodes through it.

    `hold(n)` admits a decode while the bytes held, its own included, stay within `limit_bytes`,
    or when nothing else is held (an image larger than the budget still decodes, alone). A decode
    that does not fit waits for room, or with `wait=False` is refused at once with Overloaded
    (`decoder_busy`, retryable): a worker answers a flood of large images quickly instead of
    queueing it in front of everyone else. Thread-safe; `hold` blocks, so call it from a thread,
    and free the decoded image inside the `with` (the trim at its end hands the memory back).
    """

    def __init__(self, limit_bytes: int) -> None:
        if limit_bytes <= 0:
            raise ValueError(f"a decode budget must be positive, not {limit_bytes}")
        self.limit_bytes = limit_bytes
        self._held = 0
        self._room = threading.Condition()

    @property
    def held_bytes(self) -> int:
        """Bytes held now (a snapshot)."""
        return self._held

    def _fits(self, nbytes: int) -> bool:
        return self._held == 0 or self._held + nbytes <= self.limit_bytes

    @contextmanager
    def hold(self, nbytes: int, *, wait: bool = True) -> Iterator[None]:
        """Hold `nbytes` of the budget for the body of the `with`; see the class for who waits."""
        with self._room:
            if not self._fits(nbytes):
                if not wait:
                    raise Overloaded(
                        f"other large images are being decoded ({self._held / 2**20:.0f} of "
                        f"{self.limit_bytes / 2**20:.0f} MiB); retry shortly", code="decoder_busy")
                self._room.wait_for(lambda: self._fits(nbytes))
            self._held += nbytes
        try:
            yield
        finally:
            with self._room:
                self._held -= nbytes
                self._room.notify_all()
            if nbytes >= TRIM_FROM_BYTES and _MALLOC_TRIM is not None:
                _MALLOC_TRIM(0)  # thread-safe; a few ms, after a decode of 40 ms or more
