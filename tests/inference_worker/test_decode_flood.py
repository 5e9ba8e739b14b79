"""A flood of images that cost far more to decode than to send (PNGs of a few dozen KB that decode
to 16 and 40 megapixels), through a gateway to a worker, each its own process: the flood is
answered quickly (refused from the header, or `decoder_busy` while the decode budget is taken), a
normal request sent right after it is answered, and the worker's memory comes back."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
import pytest_asyncio
from PIL import Image

from tests.conftest import TEST_PREFIX
from tests.support.cluster import cluster_env
from tests.support.http import form
from tests.support.processes import free_port, python_module, running, wait_http
from tests.support.reliability import scenario

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
PREDICT_TIMEOUT_S = 5.0  # DERMASCAN_PREDICT_TIMEOUT_S: the deadline of every prediction
FLOOD = 24  # of each size: on the old worker, 24 x (0.45 + 0.15) s of decoding on 2 threads


def _png(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), (150, 90, 70)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def heavy_pngs() -> list[bytes]:
    """A PNG just under the gateway's 40 MP (about 130 KB) and one of 16 MP (about 55 KB)."""
    return [_png(6300), _png(4000)]


@pytest_asyncio.fixture
async def cluster(rabbit_url: str, s3_endpoint: str, tmp_path: Path,
                  tiny_model_dir: Path) -> AsyncIterator[dict[str, Any]]:
    """A gateway and one inference worker on real RabbitMQ."""
    unique = f"{TEST_PREFIX}{uuid.uuid4().hex[:6]}"
    env = {**cluster_env(rabbit_url, s3_endpoint, unique, tmp_path, tiny_model_dir),
           "DERMASCAN_PREDICT_TIMEOUT_S": str(PREDICT_TIMEOUT_S)}
    base = f"http://127.0.0.1:{env['DERMASCAN_HTTP_PORT']}"
    with ExitStack() as stack:
        procs = {module: stack.enter_context(running(
                     python_module(module), log=tmp_path / f"{module}.log",
                     env={**env, "DERMASCAN_METRICS_PORT": str(free_port())}))
                 for module in ("gateway", "inference_worker")}
        await asyncio.to_thread(wait_http, f"{base}/readyz", timeout=90)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            yield {"base": base, "session": session, "worker": psutil.Process(procs["inference_worker"].pid)}


async def test_after_a_flood_of_costly_images_a_normal_request_is_answered_and_memory_comes_back(
        cluster: dict[str, Any], heavy_pngs: list[bytes], melanoma_jpeg: bytes) -> None:
    base, session, worker = cluster["base"], cluster["session"], cluster["worker"]

    async def predict(image: bytes) -> tuple[int, str | None, float]:
        started = time.monotonic()
        async with session.post(f"{base}/predict", data=form(image)) as response:
            body = await response.json()
            code = None if response.status == 200 else body["error"]["code"]
            return response.status, code, time.monotonic() - started

    for _ in range(4):  # warm: the worker's memory as it serves normal requests
        assert (await predict(melanoma_jpeg))[0] == 200
    baseline = worker.memory_info().rss

    with scenario("a flood of PNGs that decode to 16 and 40 MP") as counts:
        flood = [asyncio.create_task(predict(heavy_pngs[n % 2])) for n in range(2 * FLOOD)]
        await asyncio.sleep(0.5)  # all of it sent, ahead of the next request in the queue
        normal = await predict(melanoma_jpeg)
        answers = Counter(f"{status} {code}" if code else str(status)
                          for status, code, _ in await asyncio.gather(*flood))
        counts.answers.update(answers)
        counts.answer(normal[0])
        assert normal[0] == 200, (normal, answers)
        assert not any(kind.startswith(("500", "504")) for kind in answers), answers

        started = time.monotonic()
        while (rss := worker.memory_info().rss) > 1.1 * baseline:
            assert time.monotonic() - started < 60, \
                f"RSS {rss / 2**20:.0f} MiB, was {baseline / 2**20:.0f} MiB"
            await asyncio.sleep(0.5)
        counts.notes.append(
            f"{FLOOD} PNGs of 40 MP and {FLOOD} of 16 MP at once, then a normal request: answered 200 in "
            f"{normal[2]:.2f} s; worker RSS {baseline / 2**20:.0f} -> {rss / 2**20:.0f} MiB "
            "(before: the normal request 504 after 5 s)")
    print(f"flood answers {dict(answers)}; the normal request after it took {normal[2]:.2f} s; "
          f"worker RSS {baseline / 2**20:.0f} -> {rss / 2**20:.0f} MiB "
          f"({time.monotonic() - started:.1f} s after the flood)")
