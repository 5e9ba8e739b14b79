"""Every service's `python -m ...` answers `--help` with what it is and where its settings come
from, and refuses an argument it does not know, instead of starting to serve."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared.settings import REPO_ROOT

SERVICES = ["embedded", "gateway", "inference_worker", "ingest_service", "trainer_service"]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize("module", SERVICES)
def test_help_describes_the_service_and_exits(module: str) -> None:
    done = _run(module, "--help")
    assert done.returncode == 0, done.stderr
    assert f"python -m {module}" in done.stdout and "DERMASCAN_" in done.stdout


@pytest.mark.parametrize("module", SERVICES)
def test_an_unknown_argument_is_refused(module: str) -> None:
    done = _run(module, "--no-such-option")
    assert done.returncode == 2
    assert "unrecognized arguments: --no-such-option" in done.stderr
