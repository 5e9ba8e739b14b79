"""Every service's `python -m ...` answers `--help` with what it is and where its settings come
from, without loading TensorFlow or Keras (seconds of imports that only serving or training
needs), and refuses an argument it does not know, instead of starting to serve."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from shared.settings import REPO_ROOT

SERVICES = ["embedded", "gateway", "inference_worker", "ingest_service", "trainer_service"]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, check=False)


# runs `python -m MODULE --help`, then reports on its last line the exit status and the
# TensorFlow and Keras modules the run loaded
HELP = """
import json, runpy, sys
module = sys.argv[1]
sys.argv = [module, "--help"]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    status = 0
except SystemExit as stop:
    status = stop.code or 0
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print(json.dumps({"status": status, "loaded": loaded}))
"""


@pytest.mark.parametrize("module", SERVICES)
def test_help_describes_the_service_and_exits_without_loading_tensorflow(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", HELP, module], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    *printed, last = done.stdout.splitlines()
    report = json.loads(last)
    assert report["status"] == 0, done.stderr
    assert f"python -m {module}" in "\n".join(printed) and "DERMASCAN_" in "\n".join(printed)
    assert report["loaded"] == [], f"--help of {module} imported {report['loaded'][:5]}..."


@pytest.mark.parametrize("module", SERVICES)
def test_an_unknown_argument_is_refused(module: str) -> None:
    done = _run(module, "--no-such-option")
    assert done.returncode == 2
    assert "unrecognized arguments: --no-such-option" in done.stderr
