"""`make run` for tests: `python -m embedded` (every service in one process, the in-memory bus, a
local store) with the bundled model and the seeded sample data, started as a new user starts it:
no operator token set, so it prints one of its own, which `Embedded.operator_token` holds.
`tests/conftest.py`'s session fixture `embedded_system` is one for every test that uses it as a
user would; tests that kill it, stop it or measure its memory start their own."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import free_port, python_module, running, wait_http
from tests.support.tokens import CONTRIBUTOR_TOKEN

#: The Grafana dashboard the UI links to (DERMASCAN_GRAFANA_URL).
GRAFANA_URL = "http://127.0.0.1:3000/d/dermascan"


@dataclass(frozen=True)
class Embedded:
    """A running `python -m embedded`: its URL, its local store's folder, its log, the operator
    token it printed, and its process."""

    base: str
    var: Path
    log: Path
    operator_token: str
    proc: subprocess.Popen[bytes]


@contextmanager
def start_embedded(tmp: Path) -> Iterator[Embedded]:
    """Start it with its store and model cache under `tmp`, the test contributor token, fast
    heartbeats and progress; yield it once ready; stop it (SIGTERM, then SIGKILL) after."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"DERMASCAN_HTTP_PORT": str(port), "DERMASCAN_STORE_URL": (tmp / "var").as_uri(),
           "DERMASCAN_MODEL_CACHE_DIR": str(tmp / "cache"), "DERMASCAN_PROGRESS_INTERVAL_S": "0.2",
           "DERMASCAN_HEARTBEAT_S": "1", "DERMASCAN_GRAFANA_URL": GRAFANA_URL,
           "DERMASCAN_OPERATOR_TOKEN": "", "DERMASCAN_CONTRIBUTOR_TOKEN": CONTRIBUTOR_TOKEN}
    log = tmp / "embedded.log"
    with running(python_module("embedded"), env=env, log=log) as proc:
        wait_http(f"{base}/readyz", timeout=150, proc=proc)
        printed = re.search(r"operator token for this run.*: (dsk_\S+)", log.read_text())
        assert printed, f"make run printed no operator token: {log.read_text()[-2000:]}"
        yield Embedded(base, tmp / "var", log, printed.group(1), proc)
