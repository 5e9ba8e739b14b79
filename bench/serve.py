"""Serving benchmark: DermaScan against the model's raw limit and a naive server, one run, one box.

    .venv/bin/python bench/serve.py --model standin --model base --readme README.md

For each model, in one run on this machine:
1. the raw in-process limit (`bench/raw_limit.py`): decode + preprocess + forward on the
   worker's engine, sequential at each batch size with all cores, and two overlapped
   single-thread streams; then the overlapped streams on the other engine, for context;
2. DermaScan distributed: a gateway process and inference worker processes on the real RabbitMQ
   (fresh queue names, a file:// store under /tmp), driven by `bench/loadgen.py` at each client
   count, the same gateway's Open Inference Protocol `/infer` with the binary data extension at
   `--v2-clients` (1 and 32), then 2 and 3 worker processes, then an overload of 256 clients
   against a gateway bounded to `--max-in-flight` (fast 429s expected, with Retry-After honoured
   by the clients);
3. the naive servers (`bench/naive_server.py`, `model.predict` per request, behind FastAPI as in
   the issue's reference and behind aiohttp as a stronger baseline) driven the same way;
4. the headline ratios again, `--pairs` times back to back (raw limit at its best batch size, then
   DermaScan and both naive servers at `--pair-clients`), with the median: this shared machine's
   speed drifts by 10-20 % over minutes, and a ratio is only fair between neighbouring runs.
Every row gives img/s, p50/p90/p99 latency, errors, 429s, mean batch size (reported by the
workers), the ratio to the raw limit, and the CPU milliseconds spent per answered image by the
gateway, the workers, the load generator and RabbitMQ. `--model` is `standin` (a random-weight
MobileNetV2 at 224x224, see bench/inputs.py), `base` (models/base) or a model directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cpu import CpuSnapshot, find_pids, wait_idle
from bench.inputs import make_images, make_standin
from bench.loadgen import LoadResult, drive
from gateway.settings import GatewaySettings
from inference_worker.settings import WorkerSettings
from shared.classifier import ENGINES
from shared.host import usable_cpus
from tests.support.processes import free_port, python_module, running, wait_http

REPO = Path(__file__).resolve().parent.parent
NAIVE = {"fastapi": "FastAPI", "aiohttp": "aiohttp"}  # naive_server.py --framework -> row label
T = TypeVar("T")
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


@dataclass
class Row:
    """One line of the results table."""

    system: str
    clients: int
    rate: float
    p50: float
    p90: float
    p99: float
    errors: int = 0
    rejected: int = 0
    mean_batch: float = float("nan")
    cpu_ms: dict[str, float] = field(default_factory=dict)
    note: str = ""


def run_raw(model: Path, images: Path, seconds: float, extra: list[str]) -> list[dict[str, float]]:
    """One `bench/raw_limit.py` run in its own process (its TensorFlow threads set from `extra`)."""
    out = subprocess.run([sys.executable, str(REPO / "bench" / "raw_limit.py"), str(model), str(images),
                          "--seconds", str(seconds), *extra], cwd=REPO, env={**os.environ, **QUIET},
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def overlapped(cores: int, *batches: int) -> list[str]:
    """raw_limit.py arguments of `cores` single-thread streams at the given batch sizes."""
    return ["--intra", "1", "--inter", str(cores), "--streams", str(cores), "--batch-sizes", *map(str,
                                                                                                  batches)]


def raw_limits(model: Path, images: Path, seconds: float, cores: int) -> tuple[list[Row], dict[str, float]]:
    """Rows of the in-process measurements, and the figures the other rows are compared with: the
    limit is the best rate on the worker's engine. The same model on the other engine (TensorFlow,
    which the naive servers use too) is measured for context."""
    other = next(e for e in ENGINES if e != WorkerSettings().inference_engine)
    runs = [
        (f"raw sequential, {cores} threads",
         ["--intra", str(cores), "--streams", "1", "--batch-sizes", "1", "2", "4", "8", "16", "32"]),
        (f"raw {cores} overlapped streams, 1 thread each", overlapped(cores, 1, 4, 8, 16)),
        (f"raw {cores} overlapped streams, 1 thread each, {other}",
         [*overlapped(cores, 1, 4, 8), "--engine", other]),
    ]
    measured = []
    for _, extra in runs:
        quiet_machine()
        measured.append(run_raw(model, images, seconds, extra))
    sequential, overlapping, _ = measured
    rows = [Row(f"{name}, batch {r['batch']}", int(r["streams"]), r["rate"], r["p50_ms"], r["p90_ms"],
                float("nan"),
                mean_batch=r["batch"], note=str(r["engine"]))
            for (name, _), results in zip(runs, measured, strict=True) for r in results]
    best = {"limit": max(r["rate"] for r in sequential + overlapping),
            "batch1_p50_ms": next(r["p50_ms"] for r in sequential if r["batch"] == 1),
            "overlapped_batch": max(overlapping, key=lambda r: r["rate"])["batch"]}
    return rows, best


def quiet_machine() -> None:
    waited = wait_idle()
    if waited > 5:
        print(f"(waited {waited:.0f} s for the machine to be idle)", flush=True)


def service_env(tag: str, store: Path, model: Path, port: int, **extra: object) -> dict[str, str]:
    """Environment of one DermaScan deployment: its own queues and exchanges, a file store."""
    return {**QUIET, "DERMASCAN_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/",
            "DERMASCAN_STORE_URL": store.as_uri(), "DERMASCAN_PREDICT_QUEUE": f"{tag}.predict",
            "DERMASCAN_INGEST_QUEUE": f"{tag}.ingest", "DERMASCAN_TRAIN_QUEUE": f"{tag}.train",
            "DERMASCAN_STATUS_EXCHANGE": f"{tag}.status", "DERMASCAN_MODELS_EXCHANGE": f"{tag}.models",
            "DERMASCAN_MODEL_PATH": str(model / "model.keras"), "DERMASCAN_HTTP_PORT": str(port),
            "DERMASCAN_METRICS_PORT": "0", "DERMASCAN_HEARTBEAT_S": "1", "DERMASCAN_LOG_LEVEL": "WARNING",
            **{k: str(v) for k, v in extra.items()}}


@contextmanager
def deployment(model: Path, workdir: Path, workers: int, worker_env: dict[str, str],
               gateway_env: dict[str, str]) -> Iterator[tuple[str, dict[str, list[int]]]]:
    """A gateway and `workers` worker processes; yields the /predict URL and their PIDs."""
    quiet_machine()
    tag = f"bench{os.getpid()}-{time.monotonic_ns() % 10**9}"
    port = free_port()
    env = service_env(tag, workdir / "store", model, port)
    with ExitStack() as stack:
        gateway = stack.enter_context(running(python_module("gateway"), env={**env, **gateway_env},
                                              log=workdir / f"{tag}-gateway.log"))
        procs = [stack.enter_context(running(python_module("inference_worker"),
                                             env={**env, **worker_env, "DERMASCAN_WORKER_ID": f"w{i}"},
                                             log=workdir / f"{tag}-worker{i}.log")) for i in range(workers)]
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/livez", proc=gateway)
        deadline = time.monotonic() + 180
        while sum(1 for w in json.loads(_get(f"{base}/health"))["workers"] if w["model_version"]) < workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"workers did not come up; see {workdir}")
            time.sleep(0.5)
        try:
            warm_up(f"{base}/predict", workdir)
            yield f"{base}/predict", {"gateway": [gateway.pid], "workers": [p.pid for p in procs]}
        finally:
            asyncio.run(_delete_queues(tag))


@contextmanager
def naive_server(model: Path, workdir: Path, framework: str) -> Iterator[tuple[str, dict[str, list[int]]]]:
    """A naive baseline server (`fastapi` or `aiohttp`); yields its /predict URL and PID."""
    port = free_port()
    quiet_machine()
    with running([sys.executable, str(REPO / "bench" / "naive_server.py"), str(model), "--port", str(port),
                  "--framework", framework], env=QUIET, log=workdir / f"naive-{framework}.log") as proc:
        wait_http(f"http://127.0.0.1:{port}/livez", proc=proc)
        warm_up(f"http://127.0.0.1:{port}/predict", workdir)
        yield f"http://127.0.0.1:{port}/predict", {"gateway": [proc.pid], "workers": []}


def warm_up(url: str, workdir: Path) -> None:
    """A few seconds of unrecorded load, so that no row pays for first calls."""
    images = [p.read_bytes() for p in sorted((workdir / "images").glob("*.jpg"))]
    asyncio.run(drive(url, images, clients=8, seconds=3, warmup_s=0))


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


async def _delete_queues(tag: str) -> None:
    import aio_pika

    connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
    async with connection:
        for name in ("predict", "ingest", "train"):
            for queue in (f"{tag}.{name}", f"{tag}.{name}.dead"):
                with contextlib.suppress(Exception):  # a failed delete closes its channel
                    await (await connection.channel()).queue_delete(queue)
        for exchange in (f"{tag}.status", f"{tag}.models"):
            with contextlib.suppress(Exception):
                await (await connection.channel()).exchange_delete(exchange)


def measure(system: str, url: str, images: list[bytes], clients: int, args: argparse.Namespace,
            pids: dict[str, list[int]], protocol: str = "native") -> Row:
    """Drive `url` with `clients` clients (`protocol`: see bench/loadgen.py) and account the CPU of
    every process involved."""
    groups = {**pids, "loadgen": [os.getpid()], "rabbitmq": find_pids("beam.smp")}
    before: list[CpuSnapshot] = []

    async def run() -> LoadResult:
        async def snapshot_after_warmup() -> None:
            await asyncio.sleep(args.warmup)
            before.append(CpuSnapshot.take(groups))
        task = asyncio.create_task(snapshot_after_warmup())
        result = await drive(url, images, clients=clients, seconds=args.seconds, warmup_s=args.warmup,
                             protocol=protocol)
        await task
        return result

    result = asyncio.run(run()) if args.asyncio_loadgen else _uvloop_run(run())
    used = before[0].until(CpuSnapshot.take(groups))
    per_image = {k: round(1000 * v / max(1, result.ok), 2) for k, v in used.items()}
    note = ""
    if result.error_kinds:
        note = ", ".join(f"{k} x{v}" for k, v in result.error_kinds.items())
    if len(result.workers) > 1:
        note += " spread " + "/".join(str(n) for _, n in sorted(result.workers.items()))
    if result.rejected:
        note += (f" 429 p50 {result.percentile_ms(50, True):.1f} ms"
                 f" p99 {result.percentile_ms(99, True):.1f} ms")
    row = Row(system, clients, result.rate, result.percentile_ms(50), result.percentile_ms(90),
              result.percentile_ms(99), result.errors, result.rejected, result.mean_batch, per_image,
              note.strip())
    print(format_row(row, float("nan")), flush=True)
    return row


def _uvloop_run(coro: Coroutine[Any, Any, T]) -> T:
    import uvloop

    result: T = uvloop.run(coro)
    return result


def format_row(row: Row, limit: float) -> str:
    cpu = row.cpu_ms
    cpu_text = (f"{cpu.get('gateway', 0):.1f} / {cpu.get('workers', 0):.1f} / {cpu.get('loadgen', 0):.1f} / "
                f"{cpu.get('rabbitmq', 0):.1f} / {cpu.get('other', 0):.1f}" if cpu else "")
    ratio = row.rate / limit if limit and not math.isnan(limit) else float("nan")
    return (f"| {row.system} | {row.clients} | {row.rate:.1f} | {row.p50:.1f} | {row.p90:.1f} "
            f"| {row.p99:.1f} | "
            f"{row.errors} | {row.rejected} | {row.mean_batch:.2f} | {ratio:.2f} | {cpu_text} | {row.note} |")


HEADER = ("| system | clients | img/s | p50 ms | p90 ms | p99 ms | errors | 429s | mean batch "
          "| x raw limit | "
          "CPU ms/img server / workers / loadgen / rabbit / other | notes |\n|" + "---|" * 12)


def bench_model(label: str, model: Path, image_dir: Path, args: argparse.Namespace, workdir: Path) -> str:
    images = [p.read_bytes() for p in sorted(image_dir.glob("*.jpg"))]
    cores = usable_cpus()
    rows, best = raw_limits(model, image_dir, args.raw_seconds, cores) if not args.skip_raw else ([], {})
    limit = best.get("limit", float("nan"))
    worker_env = dict(kv.split("=", 1) for kv in args.worker_env)
    # All load comes from one address: the per-caller rate limit would measure itself, not the system.
    gateway_env = {"DERMASCAN_MAX_IN_FLIGHT": str(args.max_in_flight), "DERMASCAN_PREDICT_RATE_PER_S": "0",
                   **dict(kv.split("=", 1) for kv in args.gateway_env)}
    setup = "[" + " ".join(args.worker_env) + "]" if args.worker_env else "(default settings)"
    if args.uvloop_off:
        worker_env["DERMASCAN_UVLOOP"] = gateway_env["DERMASCAN_UVLOOP"] = "0"
        setup += " without uvloop"
    if not args.skip_dermascan:
        with deployment(model, workdir, 1, worker_env, gateway_env) as (url, pids):
            for clients in args.clients:
                rows.append(measure(f"DermaScan, 1 worker {setup}", url, images, clients, args, pids))
            for clients in args.v2_clients:
                rows.append(measure(f"DermaScan v2 /infer, binary data, 1 worker {setup}",
                                    url.replace("/predict", "/v2/models/dermascan/infer"), images, clients,
                                    args, pids, protocol="v2"))
            if args.overload:
                rows.append(measure(f"DermaScan overload, 1 worker, max in flight {args.max_in_flight}",
                                    url, images, args.overload, args, pids))
        for workers in args.workers:
            threads = max(1, cores // workers)
            env = {"DERMASCAN_WORKER_STREAMS": "1", "DERMASCAN_INTRA_OP_THREADS": str(threads), **worker_env}
            with deployment(model, workdir, workers, env, gateway_env) as (url, pids):
                for clients in args.horizontal_clients:
                    rows.append(measure(f"DermaScan, {workers} workers x 1 stream x {threads} thread(s)",
                                        url, images, clients, args, pids))
    if not args.skip_naive:
        for framework in NAIVE:
            with naive_server(model, workdir, framework) as (url, pids):
                for clients in args.clients:
                    rows.append(measure(f"naive {NAIVE[framework]}: model.predict per request", url, images,
                                        clients, args, pids))
    pairs = paired_ratios(model, image_dir, images, args, workdir, worker_env, gateway_env,
                          int(best.get("overlapped_batch", 8))) if args.pairs else []
    lines = [f"#### {label}", ""]
    if best:
        lines.append(f"Raw limit (best in-process rate): **{limit:.1f} img/s**; raw batch-1 latency p50 "
                     f"{best['batch1_p50_ms']:.1f} ms.")
        lines.append("")
    lines += [HEADER, *(format_row(row, limit) for row in rows), ""]
    if pairs:
        lines += [f"Back to back, {len(pairs)} times (the raw limit re-measured just before each pair of "
                  f"{args.pair_clients}-client rows, so slow spells of this shared machine hit all three):",
                  "",
                  PAIR_HEADER, *(format_pair(i + 1, pair) for i, pair in enumerate(pairs)),
                  format_median(pairs), ""]
    return "\n".join(lines)


@dataclass
class Pair:
    """One back-to-back measurement of the raw limit, DermaScan and the naive servers."""

    raw: float
    dermascan: float
    naive: float  # FastAPI, the reference
    naive_aiohttp: float

    @property
    def ratio(self) -> float:
        return self.dermascan / self.raw

    @property
    def speedup(self) -> float:
        return self.dermascan / self.naive

    @property
    def speedup_aiohttp(self) -> float:
        return self.dermascan / self.naive_aiohttp

    def figures(self) -> list[float]:
        """The table's columns after the run's name."""
        return [self.raw, self.dermascan, self.naive, self.naive_aiohttp, self.ratio, self.speedup,
                self.speedup_aiohttp]


PAIR_HEADER = ("| run | raw limit img/s | DermaScan img/s | naive FastAPI img/s | naive aiohttp img/s | "
               "DermaScan / raw | DermaScan / naive FastAPI | DermaScan / naive aiohttp |\n|" + "---|" * 8)


def _pair_row(name: object, figures: list[float]) -> str:
    rates, ratio, speedups = figures[:4], figures[4], figures[5:]
    return (f"| {name} | " + " | ".join(f"{v:.1f}" for v in rates) + f" | {ratio:.2f} | "
            + " | ".join(f"{v:.1f}" for v in speedups) + " |")


def format_pair(name: object, pair: Pair) -> str:
    return _pair_row(name, pair.figures())


def format_median(pairs: list[Pair]) -> str:
    """Each column's median over the runs (ratios included: the median of the ratios)."""
    columns = zip(*(p.figures() for p in pairs), strict=True)
    return _pair_row("median", [statistics.median(column) for column in columns])


def paired_ratios(model: Path, image_dir: Path, images: list[bytes], args: argparse.Namespace, workdir: Path,
                  worker_env: dict[str, str], gateway_env: dict[str, str], batch: int) -> list[Pair]:
    """The headline ratios, measured `args.pairs` times in a row: raw overlapped limit (at its best
    batch size), DermaScan with one worker, both naive servers, all at `args.pair_clients` clients.
    Both servers stay up (idle) while the raw limit runs."""
    cores = usable_cpus()
    pairs = []
    with deployment(model, workdir, 1, worker_env, gateway_env) as (url, pids), \
            naive_server(model, workdir, "fastapi") as (naive_url, naive_pids), \
            naive_server(model, workdir, "aiohttp") as (aiohttp_url, aiohttp_pids):
        for _ in range(args.pairs):
            quiet_machine()
            raw = run_raw(model, image_dir, args.raw_seconds, overlapped(cores, batch))[0]["rate"]
            dermascan = measure("DermaScan, 1 worker (pair)", url, images, args.pair_clients, args, pids)
            naive = measure("naive FastAPI (pair)", naive_url, images, args.pair_clients, args, naive_pids)
            aiohttp = measure("naive aiohttp (pair)", aiohttp_url, images, args.pair_clients, args,
                              aiohttp_pids)
            pairs.append(Pair(raw, dermascan.rate, naive.rate, aiohttp.rate))
            print(format_pair(len(pairs), pairs[-1]), flush=True)
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], help="standin, base or a model directory")
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring window per row")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--raw-seconds", type=float, default=4.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--v2-clients", type=int, nargs="*", default=[1, 32],
                        help="client counts of the Open Inference Protocol rows (none: no such rows)")
    parser.add_argument("--workers", type=int, nargs="*", default=[2, 3], help="horizontal configurations")
    parser.add_argument("--horizontal-clients", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--overload", type=int, default=256, help="clients of the overload row (0: none)")
    parser.add_argument("--pairs", type=int, default=3,
                        help="back-to-back raw / DermaScan / naive runs (0: none)")
    parser.add_argument("--pair-clients", type=int, default=32)
    parser.add_argument("--max-in-flight", type=int, default=GatewaySettings().max_in_flight,
                        help="the gateway's bound (default: DERMASCAN_MAX_IN_FLIGHT's default)")
    parser.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--uvloop-off", action="store_true", help="gateway and workers on asyncio's loop")
    parser.add_argument("--asyncio-loadgen", action="store_true", help="load generator without uvloop")
    parser.add_argument("--skip-raw", action="store_true")
    parser.add_argument("--skip-dermascan", action="store_true")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dermascan-bench")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    parser.add_argument("--readme", type=Path,
                        help="write the report into this README's serving-benchmark block")
    args = parser.parse_args(argv)
    workdir = args.workdir
    image_dir = workdir / "images"
    make_images(image_dir)
    sections = []
    for name in args.model or ["standin"]:
        if name == "standin":
            label = "MobileNetV2 224x224 stand-in (random weights)"
            model = make_standin(workdir / "mobilenetv2")
        else:
            model = REPO / "models" / "base" if name == "base" else Path(name)
            manifest = json.loads((model / "manifest.json").read_text())
            height, width = manifest["input_size"]
            label = f"{manifest['version']} ({manifest['backbone']}, {height}x{width})"
        print(f"## {label}", flush=True)
        sections.append(bench_model(label, model.resolve(), image_dir, args, workdir))
    command = shlex.join([".venv/bin/python", "bench/serve.py",
                          *(argv if argv is not None else sys.argv[1:])])
    report = "\n".join([f"Command: `{command}`", "", *sections])
    print(report)
    if args.out:
        args.out.write_text(report + "\n")
    if args.readme:
        write_readme(args.readme, report)
    return 0


README_START, README_END = "<!-- serving-benchmark:start -->", "<!-- serving-benchmark:end -->"


def write_readme(readme: Path, report: str) -> None:
    """Replace what lies between the README's serving-benchmark markers with `report`."""
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"{readme} has no {README_START} ... {README_END} block to write the results into")
    readme.write_text(f"{text[:start]}{README_START}\n{report}\n{text[end:]}")


if __name__ == "__main__":
    sys.exit(main())
