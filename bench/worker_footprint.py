"""One inference worker's footprint: time from exec to ready, and memory while it serves.

    .venv/bin/python bench/worker_footprint.py [--model models/base] [--starts 2] [--engine litert]
        [--python VENV/bin/python]

The model is published into a fresh file:// store first (`ModelRegistry.bootstrap`, as the first
service of a deployment does), so each worker starts as a scale-out replica would: it reads the
registry, downloads the current version into its own (empty) model cache, loads it and starts
consuming. Start to ready is the time from `exec` of `python -m inference_worker` to its first
heartbeat naming a model (the heartbeat starts once it consumes the predict queue; the gateway's
/readyz counts a worker from that heartbeat). The worker is then served `--predictions` images by
`--clients` concurrent callers over the real RabbitMQ (the gateway's RPC, without the gateway),
and its resident memory read from /proc: after the load (RSS) and its peak (HWM).

`--starts N` starts N workers one after the other on the same store and LiteRT conversion cache
(`DERMASCAN_LITERT_CACHE_DIR`, which the first start fills when the version has no LiteRT file of
its own), each with a fresh model cache. Prints one JSON line per start, then a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import delete_topology
from shared.bus import Delivery, MessageBus, connect_bus
from shared.messages import PredictReply, PredictRequest, WorkerStatus, decode
from shared.registry import ModelRegistry
from shared.store import open_store
from shared.wire import to_wire

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "tests" / "fixtures" / "ham10000"
BROKER = os.environ.get("DERMASCAN_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory of `pid` now (`rss`) and at its peak (`hwm`), in MB (10^6 bytes)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {name: round(int(fields[key].split()[0]) * 1024 / 1e6, 1)
            for name, key in (("rss", "VmRSS"), ("hwm", "VmHWM"))}


def worker_env(tag: str, store: Path, cache: Path, litert_cache: Path, model: Path,
               engine: str) -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
            "DERMASCAN_BROKER_URL": BROKER, "DERMASCAN_STORE_URL": store.as_uri(),
            "DERMASCAN_PREDICT_QUEUE": f"{tag}.predict", "DERMASCAN_INGEST_QUEUE": f"{tag}.ingest",
            "DERMASCAN_TRAIN_QUEUE": f"{tag}.train", "DERMASCAN_STATUS_EXCHANGE": f"{tag}.status",
            "DERMASCAN_MODELS_EXCHANGE": f"{tag}.models", "DERMASCAN_MODEL_CACHE_DIR": str(cache),
            "DERMASCAN_LITERT_CACHE_DIR": str(litert_cache), "DERMASCAN_BUNDLED_MODEL_DIR": str(model),
            "DERMASCAN_INFERENCE_ENGINE": engine, "DERMASCAN_METRICS_PORT": "0",
            "DERMASCAN_LOG_LEVEL": "WARNING"}


async def one_start(bus: MessageBus, tag: str, env: dict[str, str], images: list[bytes],
                    args: argparse.Namespace, log: Path) -> dict[str, object]:
    """Start a worker, time it to its first heartbeat, load it, read its memory, stop it."""
    ready: asyncio.Future[WorkerStatus] = asyncio.get_running_loop().create_future()

    async def on_status(delivery: Delivery) -> None:
        with contextlib.suppress(ValueError):  # another kind of status
            status = decode(WorkerStatus, delivery.body)
            if status.model_version is not None and not ready.done():
                ready.set_result(status)

    subscription = await bus.subscribe(f"{tag}.status", on_status)
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(args.python, "-m", "inference_worker", cwd=REPO,
                                                    env=env, stdout=out, stderr=asyncio.subprocess.STDOUT)
        try:
            status = await asyncio.wait_for(ready, args.timeout)
            start_to_ready = time.perf_counter() - started
            at_ready = memory_mb(proc.pid)
            served, seconds = await load(bus, tag, images, args.predictions, args.clients)
            after = memory_mb(proc.pid)
        except BaseException:
            print((await asyncio.to_thread(log.read_text))[-3000:], file=sys.stderr)
            raise
        finally:
            await subscription.cancel()
            if proc.returncode is None:
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    return {"engine": status.engine, "version": status.model_version,
            "start_to_ready_s": round(start_to_ready, 2), "rss_at_ready_mb": at_ready["rss"],
            "rss_after_load_mb": after["rss"], "peak_rss_mb": after["hwm"], "predictions": served,
            "clients": args.clients, "img_per_s": round(served / seconds, 1)}


async def load(bus: MessageBus, tag: str, images: list[bytes], total: int, clients: int) -> tuple[int, float]:
    """`total` predictions by `clients` concurrent callers; raises on any error reply."""
    left = iter(range(total))
    served = 0

    async def client() -> None:
        nonlocal served
        for i in left:
            wire = to_wire(PredictRequest(image=images[i % len(images)], image_format="jpeg",
                                          deadline=time.time() + 30))  # as the gateway sends it
            reply = decode(PredictReply, await bus.call(f"{tag}.predict", wire.body, headers=wire.headers,
                                                        timeout=30))
            if reply.error is not None:
                raise RuntimeError(f"the worker answered {reply.error}")
            served += 1

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return served, time.perf_counter() - began


async def main_async(args: argparse.Namespace) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="dermascan-footprint-") as temporary:
        return await _starts(Path(temporary), args)


async def _starts(work: Path, args: argparse.Namespace) -> list[dict[str, object]]:
    tag = f"footprint{os.getpid()}"
    store = await open_store(f"{(work / 'store').as_uri()}")
    version = await ModelRegistry(store).bootstrap(args.model)  # what a deployment's first service does
    await store.close()
    images = [p.read_bytes() for p in sorted(IMAGES.glob("*/*.jpg"))]
    bus = await connect_bus(BROKER)
    results = []
    try:
        for start in range(args.starts):
            env = worker_env(tag, work / "store", work / f"cache{start}", work / "litert-cache", args.model,
                             args.engine)
            result = {"start": start + 1, **await one_start(bus, tag, env, images, args,
                                                            work / f"worker{start}.log")}
            assert result["version"] == version
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        await bus.close()
        await delete_topology(tag, ("predict",), broker=BROKER)
    return results


def table(results: list[dict[str, object]]) -> str:
    rows = ["| start | engine | start to ready s | RSS at ready MB | RSS after load MB | peak RSS MB "
            "| img/s |", "|" + "---|" * 7]
    rows += [f"| {r['start']} | {r['engine']} | {r['start_to_ready_s']} | {r['rss_at_ready_mb']} | "
             f"{r['rss_after_load_mb']} | {r['peak_rss_mb']} | {r['img_per_s']} |" for r in results]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "base", help="a model directory")
    parser.add_argument("--engine", default="litert", help="DERMASCAN_INFERENCE_ENGINE of the workers")
    parser.add_argument("--starts", type=int, default=2, help="workers started one after the other")
    parser.add_argument("--predictions", type=int, default=400, help="images served before memory is read")
    parser.add_argument("--clients", type=int, default=32, help="concurrent callers")
    parser.add_argument("--python", default=sys.executable,
                        help="the workers' interpreter, e.g. of a venv made from requirements-worker.txt "
                             "(the worker image's packages: no TensorFlow)")
    parser.add_argument("--timeout", type=float, default=180, help="longest wait for a worker to be ready")
    args = parser.parse_args(argv)
    args.model = args.model.resolve()
    results = asyncio.run(main_async(args))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
