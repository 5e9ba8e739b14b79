"""Serving benchmark: DermaScan against the model's raw limit and its peers, one run, one box.

    .venv/bin/python bench/serve.py --model standin --model base   # the report into docs/serving.md

For each model, in one run on this machine:
1. the raw in-process limit (`bench/raw_limit.py`): decode + preprocess + forward on the
   worker's engine, sequential at each batch size with all cores, and two overlapped
   single-thread streams; then the overlapped streams on the other engine, for context;
2. DermaScan distributed (bench/servers.py): a gateway process and inference worker processes on
   the real RabbitMQ (fresh queue names, a file:// store under /tmp), driven by `bench/loadgen.py`
   at each client count, the same gateway's Open Inference Protocol `/infer` with the binary data
   extension at `--v2-clients` (1 and 32), then 2 and 3 worker processes, then an overload of 256
   clients against a gateway bounded to `--max-in-flight` (fast 429s expected, with Retry-After
   honoured by the clients); `--baseline-tree DIR` runs the same one-worker rows from another
   checkout (e.g. `git archive` of an earlier commit), so that before and after share one run;
3. the peers: BentoML 1.4 on the same LiteRT file (`--bentoml WORKERSxTHREADS`, by default one
   worker on every core and one single-thread worker per core; bench/bentoml_peer.py installs it
   into its own venv), and the naive servers (`bench/naive_server.py`, `model.predict` per
   request, behind FastAPI as in the issue's reference and behind aiohttp), driven the same way;
4. the headline ratios again, `--pairs` times back to back (raw limit at its best batch size, then
   DermaScan and both naive servers at `--pair-clients`), with the median: this shared machine's
   speed drifts by 10-20 % over minutes, and a ratio is only fair between neighbouring runs.
Every row gives img/s, p50/p90/p99 latency, errors, 429s, mean batch size (reported by the
workers), the ratio to the raw limit, the CPU milliseconds spent per answered image by the
gateway (or a peer's server), the workers, the load generator and RabbitMQ, the resident memory of
each serving process after the row and its start-to-ready time, and the load average. A summary
judges the issue's goals on the run's own figures. `--model` is `standin` (a random-weight
MobileNetV2 at 224x224 with its LiteRT file, see bench/inputs.py), `base` (models/base) or a
model directory. The report goes between the serving-benchmark markers of `--doc`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cpu import CpuSnapshot, find_pids, load_average
from bench.inputs import make_images, make_standin
from bench.loadgen import LoadResult, drive
from bench.report import (
    DEFAULT_DOC,
    HEADER,
    PAIR_HEADER,
    Pair,
    Row,
    check_block,
    format_median,
    format_pair,
    format_row,
    headline,
    write_block,
)
from bench.servers import QUIET, Served, deployment, naive_server, peer, quiet_machine
from bench.worker_footprint import memory_mb
from gateway.settings import GatewaySettings
from inference_worker.settings import WorkerSettings
from shared.classifier import ENGINES
from shared.host import usable_cpus

REPO = Path(__file__).resolve().parent.parent
NAIVE = {"fastapi": "FastAPI", "aiohttp": "aiohttp"}  # naive_server.py --framework -> row label
T = TypeVar("T")


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


def raw_limits(model: Path, images: Path, seconds: float, cores: int,
               idle_timeout_s: float) -> tuple[list[Row], dict[str, float]]:
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
        quiet_machine(idle_timeout_s)
        measured.append(run_raw(model, images, seconds, extra))
    sequential, overlapping, _ = measured
    rows = [Row(f"{name}, batch {r['batch']}", int(r["streams"]), r["rate"], r["p50_ms"], r["p90_ms"],
                float("nan"),
                mean_batch=r["batch"], note=str(r["engine"]))
            for (name, _), results in zip(runs, measured, strict=True) for r in results]
    best = {"limit": max(r["rate"] for r in sequential + overlapping),
            "batch1_p50_ms": next(r["p50_ms"] for r in sequential if r["batch"] == 1),
            "batch1_rate": next(r["rate"] for r in sequential if r["batch"] == 1),
            "overlapped_batch": max(overlapping, key=lambda r: r["rate"])["batch"]}
    return rows, best


def measure(system: str, served: Served, images: list[bytes], clients: int, args: argparse.Namespace,
            protocol: str = "native", path: str | None = None) -> Row:
    """Drive `served` (at `path` instead of its /predict, if given) with `clients` clients
    (`protocol`: see bench/loadgen.py), account the CPU of every process involved and read the
    serving processes' memory after the window."""
    url = served.url if path is None else served.url.replace("/predict", path)
    groups = {**served.pids, "loadgen": [os.getpid()], "rabbitmq": find_pids("beam.smp")}
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
              note.strip(), [_rss(pid) for pid in served.serving], served.ready_s, load_average())
    print(format_row(row, float("nan")), flush=True)
    return row


def _uvloop_run(coro: Coroutine[Any, Any, T]) -> T:
    import uvloop

    result: T = uvloop.run(coro)
    return result


def _rss(pid: int) -> float:
    try:
        return memory_mb(pid)["rss"]
    except OSError:  # gone
        return float("nan")


def bench_model(label: str, model: Path, image_dir: Path, args: argparse.Namespace, workdir: Path) -> str:
    images = [p.read_bytes() for p in sorted(image_dir.glob("*.jpg"))]
    cores = usable_cpus()
    idle = args.idle_timeout
    rows, best = ([], {}) if args.skip_raw else raw_limits(model, image_dir, args.raw_seconds, cores,
                                                           idle)
    limit = best.get("limit", float("nan"))
    worker_env = dict(kv.split("=", 1) for kv in args.worker_env)
    # All load comes from one address: the per-caller rate limit would measure itself, not the system.
    gateway_env = {"DERMASCAN_MAX_IN_FLIGHT": str(args.max_in_flight), "DERMASCAN_PREDICT_RATE_PER_S": "0",
                   **dict(kv.split("=", 1) for kv in args.gateway_env)}
    setup = "[" + " ".join(args.worker_env) + "]" if args.worker_env else "(default settings)"
    if args.uvloop_off:
        worker_env["DERMASCAN_UVLOOP"] = gateway_env["DERMASCAN_UVLOOP"] = "0"
        setup += " without uvloop"
    if args.baseline_tree:
        with deployment(model, workdir, 1, worker_env, gateway_env, idle_timeout_s=idle,
                        tree=args.baseline_tree.resolve()) as served:
            for clients in args.clients:
                rows.append(measure(f"DermaScan before ({args.baseline_label}), 1 worker {setup}", served,
                                    images, clients, args))
    if not args.skip_dermascan:
        with deployment(model, workdir, 1, worker_env, gateway_env, idle_timeout_s=idle,
                        tree=args.tree.resolve()) as served:
            for clients in args.clients:
                rows.append(measure(f"DermaScan, 1 worker {setup}", served, images, clients, args))
            for clients in args.v2_clients:
                rows.append(measure(f"DermaScan v2 /infer, binary data, 1 worker {setup}", served, images,
                                    clients, args, protocol="v2", path="/v2/models/dermascan/infer"))
            if args.overload:
                rows.append(measure(f"DermaScan overload, 1 worker, max in flight {args.max_in_flight}",
                                    served, images, args.overload, args))
        for workers in args.workers:
            threads = max(1, cores // workers)
            env = {"DERMASCAN_WORKER_STREAMS": "1", "DERMASCAN_INTRA_OP_THREADS": str(threads), **worker_env}
            with deployment(model, workdir, workers, env, gateway_env, idle_timeout_s=idle,
                            tree=args.tree.resolve()) as served:
                for clients in args.horizontal_clients:
                    rows.append(measure(f"DermaScan, {workers} workers x 1 stream x {threads} thread(s)",
                                        served, images, clients, args))
    for shape in args.bentoml if args.bentoml is not None else [f"1x{cores}", f"{cores}x1"]:
        workers, threads = (int(n) for n in shape.split("x"))
        with peer(model, workdir, workers=workers, threads=threads, idle_timeout_s=idle) as served:
            for clients in args.clients:
                rows.append(measure(f"BentoML 1.4 on LiteRT, {workers} worker(s) x {threads} thread(s)",
                                    served, images, clients, args))
    if not args.skip_naive:
        for framework in NAIVE:
            with naive_server(model, workdir, framework, idle_timeout_s=idle) as served:
                for clients in args.clients:
                    rows.append(measure(f"naive {NAIVE[framework]}: model.predict per request", served,
                                        images, clients, args))
    pairs = paired_ratios(model, image_dir, images, args, workdir, worker_env, gateway_env,
                          int(best.get("overlapped_batch", 8))) if args.pairs else []
    lines = [f"#### {label}", ""]
    if best:
        lines += [f"Raw limit (best in-process rate): **{limit:.1f} img/s**; raw batch-1 latency p50 "
                  f"{best['batch1_p50_ms']:.1f} ms on {cores} threads.", "",
                  *headline(rows, best["batch1_rate"], best["batch1_p50_ms"], limit, max(args.clients)), ""]
    lines += [HEADER, *(format_row(row, limit) for row in rows), ""]
    if pairs:
        lines += [f"Back to back, {len(pairs)} times (the raw limit re-measured just before each pair of "
                  f"{args.pair_clients}-client rows, so slow spells of this shared machine hit all three):",
                  "",
                  PAIR_HEADER, *(format_pair(i + 1, pair) for i, pair in enumerate(pairs)),
                  format_median(pairs), ""]
    return "\n".join(lines)


def paired_ratios(model: Path, image_dir: Path, images: list[bytes], args: argparse.Namespace, workdir: Path,
                  worker_env: dict[str, str], gateway_env: dict[str, str], batch: int) -> list[Pair]:
    """The headline ratios, measured `args.pairs` times in a row: raw overlapped limit (at its best
    batch size), DermaScan with one worker, both naive servers, all at `args.pair_clients` clients.
    Both servers stay up (idle) while the raw limit runs."""
    cores = usable_cpus()
    idle = args.idle_timeout
    pairs = []
    with deployment(model, workdir, 1, worker_env, gateway_env, idle_timeout_s=idle,
                    tree=args.tree.resolve()) as served, \
            naive_server(model, workdir, "fastapi", idle_timeout_s=idle) as naive, \
            naive_server(model, workdir, "aiohttp", idle_timeout_s=idle) as aiohttp:
        for _ in range(args.pairs):
            quiet_machine(idle)
            raw = run_raw(model, image_dir, args.raw_seconds, overlapped(cores, batch))[0]["rate"]
            dermascan = measure("DermaScan, 1 worker (pair)", served, images, args.pair_clients, args)
            naive_row = measure("naive FastAPI (pair)", naive, images, args.pair_clients, args)
            aiohttp_row = measure("naive aiohttp (pair)", aiohttp, images, args.pair_clients, args)
            pairs.append(Pair(raw, dermascan.rate, naive_row.rate, aiohttp_row.rate))
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
    parser.add_argument("--baseline-tree", type=Path, metavar="DIR",
                        help="also run DermaScan's one-worker rows from this checkout (e.g. `git archive "
                             "HEAD | tar -x -C DIR` before a change)")
    parser.add_argument("--baseline-label", default="baseline", help="what the baseline tree is, in its rows")
    parser.add_argument("--tree", type=Path, default=REPO, metavar="DIR",
                        help="run DermaScan's other rows from this checkout (default: this one)")
    parser.add_argument("--bentoml", nargs="*", metavar="WORKERSxTHREADS",
                        help="BentoML peers to run (default: 1xCPUs and CPUsx1; none: no BentoML rows)")
    parser.add_argument("--skip-raw", action="store_true")
    parser.add_argument("--skip-dermascan", action="store_true")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--idle-timeout", type=float, default=600,
                        help="longest wait for the machine to be idle before each part (s)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dermascan-bench")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    parser.add_argument("--doc", "--readme", type=Path, default=REPO / DEFAULT_DOC,
                        help="the file whose serving-benchmark block gets the report (default: %(default)s; "
                             "--readme: its older name)")
    parser.add_argument("--no-doc", action="store_true", help="write the report into no doc")
    args = parser.parse_args(argv)
    if not args.no_doc:
        check_block(args.doc)  # before the run, not after it
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
    report = "\n".join([f"Command: `{command}` ({usable_cpus()} CPUs)", "", *sections])
    print(report)
    if args.out:
        args.out.write_text(report + "\n")
    if not args.no_doc:
        write_block(args.doc, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
