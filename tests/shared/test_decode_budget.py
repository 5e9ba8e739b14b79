"""What decoding an image costs is bounded by what it decodes to, not by its file: a JPEG decodes at
the scale the model needs, a PNG past `max_decoded_pixels` is refused from its header, decodes
share a budget of bytes, and the memory they took goes back to the system."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from shared.decode_budget import DecodeBudget, decoded_bytes
from shared.errors import Overloaded, PayloadTooLarge
from shared.imaging import load_for_model

pytestmark = pytest.mark.timeout(60)
MIB = 2**20
REPO = Path(__file__).resolve().parents[2]


def encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def test_a_decode_that_does_not_fit_is_refused_at_once_or_waits_for_room() -> None:
    budget = DecodeBudget(100 * MIB)
    with budget.hold(64 * MIB), budget.hold(30 * MIB):  # both fit
        with pytest.raises(Overloaded) as refused, budget.hold(64 * MIB, wait=False):
            pass
        assert refused.value.code == "decoder_busy" and refused.value.retryable
        admitted = threading.Event()

        def waiter() -> None:
            with budget.hold(64 * MIB):
                admitted.set()

        thread = threading.Thread(target=waiter)
        thread.start()
        assert not admitted.wait(0.2)  # no room: it waits
    assert admitted.wait(5)  # room again: it goes
    thread.join()
    assert budget.held_bytes == 0


def test_an_image_larger_than_the_budget_decodes_alone() -> None:
    budget = DecodeBudget(10 * MIB)
    with budget.hold(decoded_bytes(40_000_000), wait=False), pytest.raises(Overloaded), \
            budget.hold(1, wait=False):
        pass


def test_a_png_that_decodes_past_the_bound_is_refused_from_its_header_and_a_jpeg_as_large_is_not() -> None:
    side = 4200  # 17.6 MP
    png = encode(Image.new("RGB", (side, side), (150, 90, 70)), "PNG")
    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge) as refused:
        load_for_model(png, (224, 224), max_decoded_pixels=4096 * 4096)
    assert refused.value.code == "too_many_pixels" and f"{side}x{side}" in refused.value.message
    assert time.perf_counter() - started < 0.05  # nothing decoded
    jpeg = encode(Image.new("RGB", (side, side), (150, 90, 70)), "JPEG")  # decodes at 1/8: 525 x 525
    assert load_for_model(jpeg, (224, 224), max_decoded_pixels=4096 * 4096).shape == (224, 224, 3)


#: Run in a process of its own: in a test process, what earlier tests left behind (threads,
#: arenas, caches) moved its resident size by more than the bound (62 MiB once, make test).
_DECODE_AND_MEASURE = """
import io, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import psutil
from PIL import Image
from shared.decode_budget import DecodeBudget
from shared.imaging import load_for_model

def encode(image, fmt):
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()

png = encode(Image.new("RGB", (6300, 6300), (150, 90, 70)), "PNG")  # 131 KB, 40 MP
small = encode(Image.new("RGB", (600, 450), (150, 90, 70)), "JPEG")
budget = DecodeBudget(96 * 2**20)
process = psutil.Process()
with ThreadPoolExecutor(2) as pool:
    list(pool.map(lambda data: load_for_model(data, (224, 224), budget=budget), [small] * 8))
    before = process.memory_info().rss
    list(pool.map(lambda data: load_for_model(data, (224, 224), budget=budget), [png] * 6))
print(process.memory_info().rss - before)
"""


def test_memory_decoded_through_a_budget_goes_back_to_the_system() -> None:
    """Pillow's 16 MiB blocks land in glibc's arenas once a free has raised its mmap threshold,
    and stay there: ten 40 MP PNGs on two threads left a process 700 MB larger for good."""
    grown = int(subprocess.run([sys.executable, "-c", _DECODE_AND_MEASURE], cwd=REPO, check=True,
                               capture_output=True, text=True).stdout)
    assert grown < 48 * MIB, f"{grown / MIB:.0f} MiB more after the decodes"
