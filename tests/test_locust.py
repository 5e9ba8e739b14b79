"""The load test in locustfile.py, run headless against the embedded system: no failures."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import REPO, free_port, python_module, running, wait_http
from tests.support.tokens import CONTRIBUTOR_TOKEN

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


def test_locust_headless_run_has_no_failures(tmp_path: Path, tiny_model_dir: Path) -> None:
    port = free_port()
    env = {"DERMASCAN_HTTP_PORT": str(port), "DERMASCAN_STORE_URL": (tmp_path / "store").as_uri(),
           "DERMASCAN_BUNDLED_MODEL_DIR": str(tiny_model_dir),
           "DERMASCAN_MODEL_CACHE_DIR": str(tmp_path / "cache"),
           "DERMASCAN_WORK_DIR": str(tmp_path / "trainer"), "DERMASCAN_CONTRIBUTOR_TOKEN": CONTRIBUTOR_TOKEN}
    base = f"http://127.0.0.1:{port}"
    with running(python_module("embedded"), env=env, log=tmp_path / "embedded.log") as proc:
        wait_http(f"{base}/readyz", timeout=120, proc=proc)
        locust = Path(sys.executable).parent / "locust"
        result = subprocess.run(
            [str(locust), "-f", "locustfile.py", "--headless", "-u", "10", "-r", "5", "-t", "15s",
             "--host", base, "--csv", str(tmp_path / "run"), "--only-summary", "--stop-timeout", "5"],
            cwd=REPO, capture_output=True, text=True, timeout=90,
            env={**os.environ, "DERMASCAN_LOCUST_TOKEN": CONTRIBUTOR_TOKEN})
        assert proc.poll() is None, "the embedded system died under load"
    output = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0, output
    with open(tmp_path / "run_stats.csv", newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    total = rows["Aggregated"]
    assert int(total["Failure Count"]) == 0, output
    assert int(total["Request Count"]) >= 20, output
    assert int(rows["/predict"]["Request Count"]) >= 10, output
    assert int(rows["/upload-bulk"]["Request Count"]) >= 1, output  # the curator's first task
    assert int(rows["/jobs/[id]"]["Request Count"]) >= 1, output
