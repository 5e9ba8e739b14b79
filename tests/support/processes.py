"""Start servers as subprocesses and stop them by the PID we started (never by name)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.tokens import TOKEN_ENV

REPO = Path(__file__).resolve().parents[2]


def embedded_env(tmp_path: Path, model_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a `python -m embedded` under test: its store and model cache in
    `tmp_path`, the model of `model_dir`, no seed dataset, the test tokens; `extra` on top."""
    return {"DERMASCAN_STORE_URL": (tmp_path / "var").as_uri(),
            "DERMASCAN_MODEL_CACHE_DIR": str(tmp_path / "cache"),
            "DERMASCAN_BUNDLED_MODEL_DIR": str(model_dir), "DERMASCAN_SEED_DATASET": "", **TOKEN_ENV, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, *, timeout: float = 60, status: int = 200,
              proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `url` until it answers `status`; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == status:
                    return
                last = response.status
        except urllib.error.HTTPError as exc:
            last = exc.code
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer {status} within {timeout} s (last: {last})")


@contextmanager
def running(args: list[str], *, env: dict[str, str] | None = None,
            log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run `args` (from the repo root) for the duration of the block; SIGTERM, then SIGKILL."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(args, cwd=REPO, env={**os.environ, **(env or {})}, stdout=out,
                            stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop(proc)
        if log:
            out.close()  # type: ignore[union-attr]  # `log` set means `out` is its open file


def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def python_module(module: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", module, *extra]
