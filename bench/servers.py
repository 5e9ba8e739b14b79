"""The systems the serving benchmark drives, each started for the duration of a block.

`deployment`: DermaScan distributed (a gateway and N inference worker processes on the real
RabbitMQ, fresh queue names, a file:// store), from this checkout or another one (`tree`: an
earlier commit's files, e.g. `git archive`, so that before and after run in one benchmark).
`naive_server`: bench/naive_server.py. `peer`: BentoML on LiteRT (bench/bentoml_peer.py). Each
yields a `Served`: where to send requests, which processes to account, which serve (their
resident memory is read after each row) and how long each took from exec to ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.bentoml_peer import bentoml_server
from bench.cpu import wait_idle
from bench.loadgen import drive
from tests.support.processes import free_port, running, wait_http

REPO = Path(__file__).resolve().parent.parent
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
BROKER = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass
class Served:
    """A system under test, up and warm."""

    url: str
    #: Processes whose CPU is accounted, by group (`gateway`, `workers`).
    pids: dict[str, list[int]]
    #: The processes whose resident memory each row reports (DermaScan: each worker).
    serving: list[int]
    #: Seconds from exec to ready: per worker for DermaScan, for the whole server otherwise.
    ready_s: list[float]


def quiet_machine(timeout_s: float) -> None:
    """Wait (up to `timeout_s`) for other people's jobs on this shared machine to calm down."""
    waited = wait_idle(timeout_s=timeout_s)
    if waited > 5:
        print(f"(waited {waited:.0f} s for the machine to be idle)", flush=True)


def service_env(tag: str, store: Path, model: Path, port: int) -> dict[str, str]:
    """Environment of one DermaScan deployment: its own queues and exchanges, a file store."""
    return {**QUIET, "DERMASCAN_BROKER_URL": BROKER,
            "DERMASCAN_STORE_URL": store.as_uri(), "DERMASCAN_PREDICT_QUEUE": f"{tag}.predict",
            "DERMASCAN_INGEST_QUEUE": f"{tag}.ingest", "DERMASCAN_TRAIN_QUEUE": f"{tag}.train",
            "DERMASCAN_STATUS_EXCHANGE": f"{tag}.status", "DERMASCAN_MODELS_EXCHANGE": f"{tag}.models",
            "DERMASCAN_MODEL_PATH": str(model / "model.keras"), "DERMASCAN_HTTP_PORT": str(port),
            "DERMASCAN_METRICS_PORT": "0", "DERMASCAN_HEARTBEAT_S": "1", "DERMASCAN_LOG_LEVEL": "WARNING"}


def module_command(module: str, tree: Path) -> list[str]:
    """`python -m module` with the packages of `tree` first on the path (run from this repo)."""
    if tree == REPO:
        return [sys.executable, "-m", module]
    return [sys.executable, "-c", f"import runpy, sys; sys.path.insert(0, {str(tree)!r}); "
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"]


@contextmanager
def deployment(model: Path, workdir: Path, workers: int, worker_env: dict[str, str],
               gateway_env: dict[str, str], *, idle_timeout_s: float, tree: Path = REPO) -> Iterator[Served]:
    """A gateway, then `workers` worker processes started together once it answers, each timed
    from exec to the gateway seeing its first heartbeat with a model (what /readyz counts)."""
    quiet_machine(idle_timeout_s)
    tag = f"bench{os.getpid()}-{time.monotonic_ns() % 10**9}"
    port = free_port()
    env = service_env(tag, workdir / "store", model, port)
    base = f"http://127.0.0.1:{port}"
    with ExitStack() as stack:
        gateway = stack.enter_context(running(module_command("gateway", tree), env={**env, **gateway_env},
                                              log=workdir / f"{tag}-gateway.log"))
        wait_http(f"{base}/livez", proc=gateway)
        began = time.perf_counter()
        procs = [stack.enter_context(running(module_command("inference_worker", tree),
                                             env={**env, **worker_env, "DERMASCAN_WORKER_ID": f"w{i}"},
                                             log=workdir / f"{tag}-worker{i}.log")) for i in range(workers)]
        ready: dict[str, float] = {}
        deadline = time.monotonic() + 180
        while len(ready) < workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"workers did not come up; see {workdir}/{tag}-*.log")
            for worker in json.loads(_get(f"{base}/health"))["workers"]:
                if worker["model_version"]:
                    ready.setdefault(worker["id"], time.perf_counter() - began)
            time.sleep(0.05)
        try:
            warm_up(f"{base}/predict", workdir)
            yield Served(f"{base}/predict", {"gateway": [gateway.pid], "workers": [p.pid for p in procs]},
                         [p.pid for p in procs], [ready[f"w{i}"] for i in range(workers)])
        finally:
            asyncio.run(delete_topology(tag))


@contextmanager
def naive_server(model: Path, workdir: Path, framework: str, *, idle_timeout_s: float) -> Iterator[Served]:
    """A naive baseline server (`fastapi` or `aiohttp`, see bench/naive_server.py)."""
    port = free_port()
    quiet_machine(idle_timeout_s)
    began = time.perf_counter()
    with running([sys.executable, str(REPO / "bench" / "naive_server.py"), str(model), "--port", str(port),
                  "--framework", framework], env=QUIET, log=workdir / f"naive-{framework}.log") as proc:
        wait_http(f"http://127.0.0.1:{port}/livez", proc=proc, timeout=180)
        ready = time.perf_counter() - began
        warm_up(f"http://127.0.0.1:{port}/predict", workdir)
        yield Served(f"http://127.0.0.1:{port}/predict", {"gateway": [proc.pid], "workers": []}, [proc.pid],
                     [ready])


@contextmanager
def peer(model: Path, workdir: Path, *, workers: int, threads: int,
         idle_timeout_s: float) -> Iterator[Served]:
    """BentoML on LiteRT with `workers` processes of `threads` threads (bench/bentoml_peer.py); its
    processes (the arbiter and the workers) are all accounted as the server's."""
    quiet_machine(idle_timeout_s)
    with bentoml_server(model, workdir, workers=workers, threads=threads) as server:
        warm_up(server.url, workdir)
        yield Served(server.url, {"gateway": server.pids, "workers": []}, server.pids,
                     [server.start_to_ready_s])


def warm_up(url: str, workdir: Path) -> None:
    """A few seconds of unrecorded load, so that no row pays for first calls."""
    images = [p.read_bytes() for p in sorted((workdir / "images").glob("*.jpg"))]
    asyncio.run(drive(url, images, clients=8, seconds=3, warmup_s=0))


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


async def delete_topology(tag: str, queues: tuple[str, ...] = ("predict", "ingest", "train"), *,
                          broker: str = BROKER) -> None:
    """Delete the queues (and their dead-letter queues) and the exchanges the services of a run
    tagged `tag` declared: a shared broker must not fill up."""
    import aio_pika

    connection = await aio_pika.connect(broker)
    async with connection:
        for name in queues:
            for queue in (f"{tag}.{name}", f"{tag}.{name}.dead"):
                with contextlib.suppress(Exception):  # a failed delete closes its channel
                    await (await connection.channel()).queue_delete(queue)
        for exchange in (f"{tag}.status", f"{tag}.models"):
            with contextlib.suppress(Exception):
                await (await connection.channel()).exchange_delete(exchange)
