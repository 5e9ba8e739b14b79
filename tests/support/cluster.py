"""The distributed system as processes: each service its own `python -m <service>` on real RabbitMQ
and the S3 server, started and stopped by the PIDs started (never by name).

`cluster_env` is the settings every test cluster shares (its own queues, exchanges and bucket);
`Cluster` starts services on it, each with a metrics port of its own that a restart keeps (so a
Prometheus scraping it finds the new process); `four_services` starts the whole system in the
order a deployment does. `tests/conftest.py`'s session fixture `distributed` is one such system
for every test that only uses it; the fault tests, which cut the broker, start their own.
Single-threaded use: call from one thread (an async test calls `close` through `to_thread`)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tests.support.processes import free_port, python_module, running, stop, wait_http
from tests.support.tokens import TOKEN_ENV

#: The four services, in the order `four_services` starts them.
SERVICES = ("gateway", "inference_worker", "ingest_service", "trainer_service")
#: What the tests give moto's S3 server as credentials.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def cluster_env(broker_url: str, s3_endpoint: str, unique: str, tmp_path: Path,
                model_dir: Path) -> dict[str, str]:
    """The settings every service of one test cluster shares: queues and exchanges named
    `<unique>.<name>`, the bucket `unique`, the model of `model_dir`, the test tokens, fast
    heartbeats and progress, a gate that lets the first candidate through, no per-caller limit."""
    return {
        **AWS_ENV,
        "DERMASCAN_BROKER_URL": broker_url, "DERMASCAN_STORE_URL": f"s3://{unique}",
        "DERMASCAN_S3_ENDPOINT_URL": s3_endpoint, "DERMASCAN_HTTP_PORT": str(free_port()),
        **{f"DERMASCAN_{name.upper()}_QUEUE": f"{unique}.{name}" for name in ("predict", "ingest", "train")},
        **{f"DERMASCAN_{name.upper()}_EXCHANGE": f"{unique}.{name}" for name in ("status", "models")},
        "DERMASCAN_BUNDLED_MODEL_DIR": str(model_dir), "DERMASCAN_HEARTBEAT_S": "1",
        "DERMASCAN_JOB_STALE_S": "4", "DERMASCAN_PROGRESS_INTERVAL_S": "0.5",
        "DERMASCAN_MODEL_CACHE_DIR": str(tmp_path / "cache"), "DERMASCAN_WORK_DIR": str(tmp_path / "trainer"),
        **TOKEN_ENV,
        # A gate that lets the first candidate through (margins are the trainer's settings).
        "DERMASCAN_MAX_BALANCED_ACCURACY_DROP": "1", "DERMASCAN_MAX_CLASS_RECALL_DROP": "1",
        "DERMASCAN_GATE_MALIGNANT_MAX_RECALL_DROP": "1", "DERMASCAN_GATE_MIN_CLASS_SUPPORT": "1",
        "DERMASCAN_GATE_UNJUDGED_MALIGNANT_BLOCKS": "false",
        "DERMASCAN_PREDICT_RATE_PER_S": "0",  # one test client predicts in a tight loop: no per-caller limit
    }


class Cluster:
    """Service processes sharing `env`, logging to `logs/<name>-<n>.log`. `base` is the gateway's
    URL; `procs` the latest process of each name; `metrics_ports` the port where each name
    serves `/metrics` and `/livez`."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.base = f"http://127.0.0.1:{env['DERMASCAN_HTTP_PORT']}"
        self.store_url = env["DERMASCAN_STORE_URL"]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.metrics_ports: dict[str, int] = {}
        self._commands: dict[str, tuple[str, tuple[str, ...], dict[str, str]]] = {}
        self._stack = ExitStack()

    def start(self, module: str, *args: str, name: str | None = None,
              **extra: str) -> subprocess.Popen[bytes]:
        """Start `python -m module args` as `name` (default: the module), with `extra` settings on
        top of the cluster's; a name started again gets its metrics port again (the gateway's is
        its HTTP port, where it serves /metrics). Returns at once."""
        name = name or module
        self._commands[name] = (module, args, extra)
        http = int(self.env["DERMASCAN_HTTP_PORT"]) if module == "gateway" else None
        port = self.metrics_ports.setdefault(name, http or free_port())
        log = self.logs / f"{name}-{time.monotonic_ns()}.log"
        self.procs[name] = self._stack.enter_context(running(
            python_module(module, *args), env={**self.env, "DERMASCAN_METRICS_PORT": str(port), **extra},
            log=log))
        return self.procs[name]

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        """Start the process `name` again as it was started (stopping it first if it runs), and
        wait until it answers on its metrics port."""
        module, args, extra = self._commands[name]
        old = self.procs[name]
        if old.poll() is None:
            stop(old)
        proc = self.start(module, *args, name=name, **extra)
        wait_http(self.metrics(name, "/livez"), timeout=60, proc=proc)
        return proc

    def revive(self) -> None:
        """Restart every process that is no longer running (an earlier test killed it, or it died)."""
        dead = self.dead()
        for name in dead:
            self.restart(name)
        if dead:
            wait_http(f"{self.base}/readyz", timeout=120)

    def settle(self, timeout: float = 60) -> str:
        """Wait until every worker serves the registry's current model (a promotion's reload is
        in the background) and return that version; AssertionError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            current = _get_json(f"{self.base}/models")["current"]
            serving = _get_json(f"{self.base}/health")["model_versions"]
            if serving == [current]:
                return str(current)
            assert time.monotonic() < deadline, f"workers serve {serving}, the registry says {current}"
            time.sleep(0.2)

    def metrics(self, name: str, path: str = "/metrics") -> str:
        """The URL of `path` (`/metrics`, `/livez`) on the metrics port of the process `name`."""
        return f"http://127.0.0.1:{self.metrics_ports[name]}{path}"

    def dead(self) -> dict[str, int]:
        """The exit code of every latest process that is no longer running, by name."""
        return {name: code for name, proc in self.procs.items() if (code := proc.poll()) is not None}

    def close(self) -> None:
        """Stop every process started: SIGTERM to all at once (they drain side by side), then
        each waited for, latest first, and killed if it is still running 15 s on."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        self._stack.close()


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@contextmanager
def four_services(env: dict[str, str], logs: Path) -> Iterator[Cluster]:
    """Gateway, inference worker, ingest and trainer, ready: the trainer starts once the worker
    has seeded the registry (so it sees a current model) and answers on its metrics port."""
    cluster = Cluster(env, logs)
    try:
        for service in SERVICES[:3]:
            cluster.start(service)
        wait_http(f"{cluster.base}/readyz", timeout=120, proc=cluster.procs["inference_worker"])
        trainer = cluster.start("trainer_service", "serve")
        wait_http(cluster.metrics("trainer_service", "/livez"), timeout=60, proc=trainer)
        yield cluster
    finally:
        cluster.close()
