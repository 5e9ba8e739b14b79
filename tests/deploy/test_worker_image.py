"""The worker's own image, checked without a Docker engine: built from requirements-worker.txt (no
TensorFlow), which holds every package the worker imports, pinned as requirements.txt pins it; it
carries the bundled model's LiteRT file, and docker-compose runs the workers on it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from shared.litert import sha256_of
from shared.manifest import ModelManifest
from tests.support.processes import REPO

pytestmark = pytest.mark.timeout(120)

WORKER_REQUIREMENTS = REPO / "requirements-worker.txt"
LEFT_OUT = {"tensorflow-cpu", "tensorflow", "keras", "h5py", "scikit-learn", "mlflow-skinny", "mlflow"}
#: Imported when installed, not needed: the worker image runs without them.
OPTIONAL = {"brotli": "aiohttp decodes brotli bodies with it when it is there",
            "certifi": "botocore falls back to its own CA bundle",
            "setuptools": "its _distutils_hack, which site loads from a .pth file"}
#: What a distributed worker imports beyond `python -m inference_worker` itself: the RabbitMQ bus,
#: the S3 store and the LiteRT runtime (each imported where it is first used).
WORKER_IMPORTS = """
import json, sys
import inference_worker.__main__, shared.bus.rabbitmq, shared.store.s3, ai_edge_litert.interpreter
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def pins(path: Path) -> dict[str, str]:
    """Package -> pinned version, of a requirements file's `name==version` lines."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not pinned"
            found[canonicalize_name(name)] = version
    return found


def stages() -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's instructions by stage name."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    by_stage: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        op, arg = line.split(None, 1)
        if op.upper() == "FROM":
            current = by_stage.setdefault(arg.split()[-1], [])
        current.append((op.upper(), arg))
    return by_stage


def closure(names: set[str]) -> set[str]:
    """`names` and everything they require here (markers judged on this interpreter)."""
    seen: set[str] = set()
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for spec in metadata.requires(name) or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return seen


def test_the_worker_requirements_leave_out_tensorflow_and_keep_the_full_sets_pins() -> None:
    worker, full = pins(WORKER_REQUIREMENTS), pins(REPO / "requirements.txt")
    assert not set(worker) & LEFT_OUT
    assert {name: full.get(name) for name in worker} == worker, "pinned otherwise than in requirements.txt"


def test_the_worker_requirements_hold_every_package_the_worker_imports() -> None:
    done = subprocess.run([sys.executable, "-c", WORKER_IMPORTS], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=True)
    modules = json.loads(done.stdout)
    assert not {"tensorflow", "keras", "sklearn", "h5py", "mlflow"} & set(modules)
    owners = metadata.packages_distributions()
    imported = {canonicalize_name(d) for module in modules for d in owners.get(module, [])}
    assert sorted(imported - closure(set(pins(WORKER_REQUIREMENTS))) - set(OPTIONAL)) == []


def test_the_dockerfile_builds_a_worker_image_from_the_worker_requirements() -> None:
    by_stage = stages()
    worker = by_stage["worker"]
    assert worker[0] == ("FROM", "python:3.11-slim AS worker")
    sources = [arg.split() for op, arg in worker if op == "COPY"]
    venv_from = [s[0].removeprefix("--from=") for s in sources if s[0].startswith("--from=")]
    assert len(venv_from) == 1
    installs = " ".join(arg for op, arg in by_stage[venv_from[0]] if op in {"COPY", "RUN"})
    assert "requirements-worker.txt" in installs and "requirements.txt " not in installs
    copied = {s[0].rstrip("/") for s in sources if not s[0].startswith("--from=")}
    assert copied == {"shared", "inference_worker", "models/base"}
    assert ("CMD", '["python", "-m", "inference_worker"]') in worker
    users = [arg for op, arg in worker if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert list(by_stage)[-1] == "runtime", "the full image stays the default (last) stage"


def test_the_bundled_model_ships_its_litert_file() -> None:
    base = REPO / "models" / "base"
    manifest = ModelManifest.model_validate_json((base / "manifest.json").read_text())
    assert manifest.litert is not None
    flatbuffer = (base / manifest.litert.file).read_bytes()
    assert sha256_of(flatbuffer) == manifest.litert.sha256
    assert len(flatbuffer) < 17_000_000


def test_compose_runs_the_workers_on_the_worker_image() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    worker = compose["services"]["inference_worker"]
    assert worker["build"] == {"context": ".", "target": "worker"}
    assert re.fullmatch(r"dermascan-worker:\$\{DERMASCAN_TAG:-latest\}", worker["image"])
    for name in ("gateway", "ingest_service", "trainer_service"):
        assert compose["services"][name]["image"].startswith("dermascan:"), name
