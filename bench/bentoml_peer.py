"""BentoML on LiteRT as a peer in the serving benchmark: its venv, its model file, its server.

    .venv/bin/python bench/bentoml_peer.py   # make (or check) var/bench-bentoml-venv, print its bentoml

`ensure_venv` installs bench/requirements-bentoml.txt (pinned, from PyPI) into its own venv,
var/bench-bentoml-venv, once per version of that file: BentoML's dependencies never enter the
services' venv or images. `litert_file` is the model's LiteRT flatbuffer (the version's own
`model.tflite`, else converted as a worker converts it, cached by the Keras file's digest), so
BentoML and DermaScan run the very same graph. `bentoml_server` runs `bentoml serve` on
bench/bentoml_service.py with a number of worker processes and LiteRT threads each, and yields
its /predict URL with its processes and their start-to-ready time (exec to /readyz answering 200).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cpu import descendants
from tests.support.processes import free_port, running, wait_http

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "bench" / "requirements-bentoml.txt"
VENV = REPO / "var" / "bench-bentoml-venv"


def ensure_venv(venv: Path = VENV, requirements: Path = REQUIREMENTS) -> Path:
    """The `bentoml` command of `venv`, made from `requirements` unless it was made from this very
    file already (a stamp named by the file's digest). Raises CalledProcessError when pip fails."""
    stamp = venv / f".installed-{hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]}"
    if not stamp.is_file():
        print(f"installing {requirements.name} into {venv} (once per version of that file)", flush=True)
        if not (venv / "bin" / "python").is_file():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(requirements)],
                       check=True)
        for old in venv.glob(".installed-*"):
            old.unlink()
        stamp.touch()
    return venv / "bin" / "bentoml"


def litert_file(model: Path, workdir: Path) -> Path:
    """The LiteRT flatbuffer of the model directory `model`: its own published file, else its Keras
    file converted (TensorFlow, in this process) into `workdir`, through the worker's cache."""
    from inference_worker.settings import WorkerSettings
    from shared import litert
    from shared.manifest import ModelManifest

    manifest = ModelManifest.model_validate_json((model / "manifest.json").read_text())
    if manifest.litert is not None:
        return model / manifest.litert.file
    import keras

    artifact = model / "model.keras"
    flatbuffer = litert.convert(keras.saving.load_model(artifact, compile=False), artifact,
                                WorkerSettings().litert_cache_dir)
    target = workdir / f"{manifest.version}.tflite"
    target.write_bytes(flatbuffer)
    return target


@dataclass
class Server:
    """A running peer server: where to send requests, its processes, how long it took to serve."""

    url: str
    pids: list[int]
    start_to_ready_s: float


@contextmanager
def bentoml_server(model: Path, workdir: Path, *, workers: int, threads: int) -> Iterator[Server]:
    """`bentoml serve` of bench/bentoml_service.py on `model` with `workers` processes of one
    `threads`-thread interpreter each, for the duration of the block."""
    bentoml = ensure_venv()
    port = free_port()
    env = {"BENCH_LITERT_FILE": str(litert_file(model, workdir)),
           "BENCH_MANIFEST": str(model / "manifest.json"), "BENCH_WORKERS": str(workers),
           "BENCH_THREADS": str(threads), "BENTOML_HOME": str(workdir / "bentoml"),
           "BENTOML_DO_NOT_TRACK": "True", "PYTHONUNBUFFERED": "1",
           "PATH": f"{bentoml.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(bentoml), "serve", "bench.bentoml_service:LesionClassifier", "--port", str(port),
               "--host", "127.0.0.1", "--working-dir", str(REPO)]
    began = time.perf_counter()
    with running(command, env=env, log=workdir / f"bentoml-{workers}x{threads}.log") as proc:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc=proc, timeout=180)
        ready = time.perf_counter() - began
        yield Server(f"http://127.0.0.1:{port}/predict", descendants(proc.pid), ready)


if __name__ == "__main__":
    print(ensure_venv())
