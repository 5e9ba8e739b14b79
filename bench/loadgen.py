"""A light async load generator for `POST /predict` (or the Open Inference Protocol's `/infer`
with the binary data extension, `--protocol v2`): N clients in closed loop over loopback.

    .venv/bin/python bench/loadgen.py http://127.0.0.1:8080/predict --clients 32 --seconds 10

Each client posts one image, waits for the answer, posts the next (a closed loop, like a person
or a service waiting on each prediction). The multipart bodies are built once, so the generator
spends as little CPU as it can on the machine it shares with the system under test. A 429 is
counted as `rejected` (not an error) and the client waits its Retry-After, as a polite client
does; anything else that is not a 200, and every timeout or connection failure, is an error.
Only requests that finish inside the measuring window (after `warmup_s`) are counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

BOUNDARY = "dermascan-bench-boundary"


def multipart(image: bytes, filename: str = "lesion.jpg") -> bytes:
    """A complete multipart/form-data body with `image` as field `file`."""
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode()
    return head + image + f"\r\n--{BOUNDARY}--\r\n".encode()


def v2_body(image: bytes) -> tuple[bytes, dict[str, str]]:
    """An Open Inference Protocol request for `image` with the binary data extension, every output
    asked for as binary (what tritonclient sends by default), and its headers."""
    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": len(image) + 4}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + struct.pack("<I", len(image)) + image, {
        "Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}


@dataclass
class LoadResult:
    """What one load run saw inside its measuring window."""

    clients: int
    window_s: float
    latencies_s: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    workers: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    rejected_latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    @property
    def rate(self) -> float:
        """Answered predictions per second."""
        return self.ok / self.window_s if self.window_s > 0 else 0.0

    def percentile_ms(self, q: float, rejected: bool = False) -> float:
        values = sorted(self.rejected_latencies_s if rejected else self.latencies_s)
        if not values:
            return float("nan")
        return 1000 * values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]

    @property
    def mean_batch(self) -> float:
        return statistics.fmean(self.batch_sizes) if self.batch_sizes else float("nan")

    def as_dict(self) -> dict[str, object]:
        return {
            "clients": self.clients, "rate": round(self.rate, 2), "ok": self.ok,
            "p50_ms": round(self.percentile_ms(50), 1), "p90_ms": round(self.percentile_ms(90), 1),
            "p99_ms": round(self.percentile_ms(99), 1), "errors": self.errors,
            "error_kinds": self.error_kinds, "rejected": self.rejected,
            "rejected_p50_ms": round(self.percentile_ms(50, rejected=True), 1),
            "rejected_p99_ms": round(self.percentile_ms(99, rejected=True), 1),
            "mean_batch": round(self.mean_batch, 2), "workers": self.workers,
        }


async def drive(url: str, images: Sequence[bytes], *, clients: int, seconds: float,
                warmup_s: float = 2.0, timeout_s: float = 30.0,
                max_requests: int | None = None, protocol: str = "native") -> LoadResult:
    """Run `clients` closed-loop clients for `warmup_s + seconds`; returns what the window saw.
    `protocol`: `native` (a multipart `POST /predict`) or `v2` (`url` is an Open Inference
    Protocol `/infer`, sent one image with the binary data extension; its answers name no worker
    or batch size).

    Stops early once `max_requests` answers were counted. Never raises for HTTP failures.
    """
    if protocol == "v2":
        requests = [v2_body(image) for image in images]
    else:
        requests = [(multipart(image), {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
                    for image in images]
    clock = time.perf_counter  # uvloop's loop.time() only has millisecond resolution
    begin = clock()
    window_start, stop_at = begin + warmup_s, begin + warmup_s + seconds
    result = LoadResult(clients, seconds)
    done = asyncio.Event()

    def record_error(kind: str, ended: float) -> None:
        if ended >= window_start:
            result.errors += 1
            result.error_kinds[kind] = result.error_kinds.get(kind, 0) + 1

    async def client(session: aiohttp.ClientSession, index: int) -> None:
        n = index
        while clock() < stop_at and not done.is_set():
            body, headers = requests[n % len(requests)]
            n += clients
            sent = clock()
            pause = 0.0
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    payload = await response.read()
                    ended = clock()
                    if ended > stop_at:
                        return
                    if response.status == 200:
                        if ended >= window_start:
                            result.latencies_s.append(ended - sent)
                            if protocol == "v2":  # the JSON part: the binary tensors follow it
                                length = response.headers.get("Inference-Header-Content-Length")
                                json.loads(payload[:int(length)] if length else payload)
                            else:
                                worker = json.loads(payload).get("worker") or {}
                                result.batch_sizes.append(int(worker.get("batch_size") or 1))
                                wid = str(worker.get("id", "-"))
                                result.workers[wid] = result.workers.get(wid, 0) + 1
                            if max_requests is not None and result.ok >= max_requests:
                                done.set()
                    elif response.status == 429:
                        if ended >= window_start:
                            result.rejected += 1
                            result.rejected_latencies_s.append(ended - sent)
                        pause = float(response.headers.get("Retry-After", "1"))
                    else:
                        record_error(f"http_{response.status}", ended)
            except (TimeoutError, aiohttp.ClientError) as exc:
                record_error(type(exc).__name__, clock())
            if pause:
                await asyncio.sleep(min(pause, max(0.0, stop_at - clock())))

    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session, i) for i in range(clients)))
    if done.is_set():
        result.window_s = max(1e-9, clock() - window_start)
    return result


def load_images(paths: Sequence[Path]) -> list[bytes]:
    return [path.read_bytes() for path in paths]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--images", type=Path, default=Path("tests/fixtures/ham10000"))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--protocol", choices=["native", "v2"], default="native",
                        help="v2: `url` is an Open Inference Protocol /infer, sent binary data")
    args = parser.parse_args(argv)
    images = load_images(sorted(args.images.rglob("*.jpg")))
    result = asyncio.run(drive(args.url, images, clients=args.clients, seconds=args.seconds,
                               warmup_s=args.warmup, protocol=args.protocol))
    print(json.dumps(result.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
