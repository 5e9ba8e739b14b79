"""Fixtures shared by every test: real RabbitMQ, a real S3 server (moto), tiny models, images, and
the two systems tests share: one distributed cluster (`distributed_system`) and one embedded
process (`embedded_system`) per run, each started on first use. Tests that use a shared system
run last, grouped by system, so its processes run only while its tests do."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.support import reliability
from tests.support.cluster import AWS_ENV, Cluster, cluster_env, four_services
from tests.support.embedded import Embedded, start_embedded
from tests.support.models import make_tiny_model
from tests.support.processes import free_port, running, wait_http

FIXTURES = Path(__file__).parent / "fixtures"
RABBIT_URL = os.environ.get("DERMASCAN_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
#: Set to 1 by `make test-fast`: a test that needs RabbitMQ is skipped when none answers. Unset (as
#: in `make test`), a missing broker fails those tests.
BROKER_OPTIONAL = os.environ.get("DERMASCAN_TEST_BROKER_OPTIONAL") == "1"
#: The shared systems' fixtures, in the order their tests run (after every other test).
SHARED_SYSTEMS = ("embedded_system", "distributed_system")
#: The modules whose tests use a shared system: under pytest-xdist one worker runs them all, so each
#: system starts once a run (`pytest_xdist_make_scheduler`). A module using one that is missing
#: here stops the run at collection.
SHARED_SYSTEM_MODULES = frozenset({
    "tests/deploy/test_prometheus_dashboard.py", "tests/test_distributed_jobs.py", "tests/test_end_to_end.py",
    "tests/test_ui_browser.py", "tests/test_v2_distributed.py",
})
#: The split secret test systems draw with (DERMASCAN_SPLIT_SECRET), so which images are held out
#: is the same run after run, like a seed; tests of the secret a store makes for itself unset it.
TEST_SPLIT_SECRET = "dermascan-tests-split-secret"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write var/reliability.md from what this session's fault tests counted (if any ran);
    `make reliability-doc` copies it into the tracked docs/reliability.md. A pytest-xdist worker
    hands its rows to the controller instead (`pytest_testnodedown`), which writes the one doc."""
    worker_output = getattr(session.config, "workeroutput", None)
    if worker_output is not None:
        worker_output["reliability"] = reliability.session_rows()
        return
    args = " ".join(session.config.invocation_params.args)
    reliability.write_doc(f"python -m pytest {args}".strip())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist's controller: keep the rows a worker's fault tests counted, for the doc."""
    part = getattr(node, "workeroutput", {}).get("reliability")
    if part:
        reliability.take(part)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The order tests run in.

    In one process, the tests on a shared system run last, those of each system together (in
    their collected order otherwise): a session fixture stops only when the run ends.

    Under pytest-xdist (`make test`: `-n 3 --dist loadfile --no-loadscope-reorder`) the modules
    with a slow test come first (in collected order), then the rest, so that no long test starts
    when the others are nearly done; `pytest_xdist_make_scheduler` keeps each module, and all of
    SHARED_SYSTEM_MODULES, in one worker."""
    def system(item: pytest.Item) -> int:
        used = getattr(item, "fixturenames", ())
        return next((n + 1 for n, name in enumerate(SHARED_SYSTEMS) if name in used), 0)

    unlisted = sorted({item.nodeid.split("::")[0] for item in items if system(item)} - SHARED_SYSTEM_MODULES)
    if unlisted:
        raise pytest.UsageError(f"add {unlisted} to SHARED_SYSTEM_MODULES in tests/conftest.py")
    if hasattr(config, "workerinput"):
        slow_modules = {item.path for item in items if item.get_closest_marker("slow")}
        items.sort(key=lambda item: item.path not in slow_modules)
    else:
        items.sort(key=system)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`, but with every module of SHARED_SYSTEM_MODULES in one unit of work (one
    worker runs them in order), so each shared system starts once a run."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FilesAndSharedSystems(LoadFileScheduling):  # type: ignore[misc]  # xdist's scheduler is untyped to mypy
        def _split_scope(self, nodeid: str) -> str:
            module = super()._split_scope(nodeid)
            return "the shared systems" if module in SHARED_SYSTEM_MODULES else module

    return FilesAndSharedSystems(config, log)


def broker_answers(url: str = RABBIT_URL) -> bool:
    """Whether something accepts a TCP connection at the broker's host and port (within 1 s)."""
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def rabbit_url() -> str:
    """The real RabbitMQ that `make test` made sure is running. Under `make test-fast`
    (DERMASCAN_TEST_BROKER_OPTIONAL=1) a test asking for it is skipped when no broker answers."""
    if BROKER_OPTIONAL and not broker_answers():
        pytest.skip(f"no RabbitMQ answers at {urlparse(RABBIT_URL).netloc.split('@')[-1]} "
                    "(make test-fast runs without one; make test starts it)")
    return RABBIT_URL


TEST_PREFIX = f"t{uuid.uuid4().hex[:6]}"


@pytest.fixture
def unique() -> str:
    """A fresh name for queues, exchanges and buckets of one test (this session's prefix)."""
    return f"{TEST_PREFIX}{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session", autouse=True)
def shared_litert_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One LiteRT conversion cache for the whole session (entries are named by the model file's
    hash, so sharing is safe): each model is converted once, not once per test."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DERMASCAN_LITERT_CACHE_DIR", str(tmp_path_factory.mktemp("litert-cache")))
        yield


@pytest.fixture(scope="session", autouse=True)
def test_settings() -> Iterator[None]:
    """Settings every service a test starts reads, in this process or another: splits drawn with
    TEST_SPLIT_SECRET (a random one per store would change the held-out images run to run), and
    training children at the tests' own priority (DERMASCAN_TRAIN_NICENESS=0: `make test` runs
    three test processes side by side, and at the default 10 a training job whose neighbour is
    busy would get a tenth of a core and outlast its test's timeout)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DERMASCAN_SPLIT_SECRET", TEST_SPLIT_SECRET)
        patch.setenv("DERMASCAN_TRAIN_NICENESS", "0")
        yield


@pytest.fixture(scope="session", autouse=True)
def delete_test_queues() -> Iterator[None]:
    """At the end, delete the broker queues and exchanges this session's tests created (by
    their unique prefix), so a shared RabbitMQ does not fill up run after run."""
    yield
    if broker_answers():
        asyncio.run(_delete_named(TEST_PREFIX))


def _rabbitmqctl(listing: str) -> str:
    """The names `rabbitmqctl <listing>` prints, one a line (blocking: run it in a thread)."""
    return subprocess.run(["rabbitmqctl", listing, "-q", "--no-table-headers", "name"],
                          capture_output=True, text=True, timeout=30).stdout


async def _delete_named(prefix: str) -> None:
    import aio_pika

    try:
        listing = (await asyncio.to_thread(_rabbitmqctl, "list_queues")).split()
        exchanges = (await asyncio.to_thread(_rabbitmqctl, "list_exchanges")).split()
        connection = await aio_pika.connect(RABBIT_URL, timeout=5)
    except (TimeoutError, OSError, subprocess.SubprocessError):
        return
    async with connection:
        channel = await connection.channel()
        for name in (n for n in listing if n.startswith(prefix)):
            await channel.queue_delete(name)
        for name in (n for n in exchanges if n.startswith(prefix)):
            await channel.exchange_delete(name)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server, started as a subprocess on a free loopback port."""
    for key, value in AWS_ENV.items():
        os.environ.setdefault(key, value)
    port = free_port()
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with running([moto, "-H", "127.0.0.1", "-p", str(port)], log=log) as proc:
        endpoint = f"http://127.0.0.1:{port}"
        wait_http(f"{endpoint}/moto-api/", timeout=30, proc=proc)
        yield endpoint


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random CNN with a manifest (3 classes, 32x32 input)."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def fixture_images() -> dict[str, list[Path]]:
    """Committed real HAM10000 images, by class."""
    root = FIXTURES / "ham10000"
    return {d.name: sorted(d.glob("*.jpg")) for d in sorted(root.iterdir()) if d.is_dir()}


@pytest.fixture(scope="session")
def melanoma_jpeg(fixture_images: dict[str, list[Path]]) -> bytes:
    return fixture_images["melanoma"][0].read_bytes()


@pytest.fixture(scope="session")
def _distributed(rabbit_url: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory,
                 tiny_model_dir: Path) -> Iterator[Cluster]:
    tmp, unique = tmp_path_factory.mktemp("distributed"), f"{TEST_PREFIX}{uuid.uuid4().hex[:6]}"
    env = {**cluster_env(rabbit_url, s3_endpoint, unique, tmp, tiny_model_dir),
           "DERMASCAN_QUEUE_POLL_S": "1",  # the gateway's queue-depth gauge, for the dashboard test
           "DERMASCAN_INTRA_OP_THREADS": "1"}
    with four_services(env, tmp) as cluster:
        yield cluster


@pytest.fixture
def distributed_system(_distributed: Cluster) -> Cluster:
    """The run's distributed DermaScan: gateway, inference worker, ingest and trainer processes on
    RabbitMQ and S3 with the tiny model (tests.support.cluster). Shared: a test may upload, retrain,
    promote, or kill a service and `restart` it, but must not assume what the earlier tests left
    (the current model, the catalog, the counters). Before each test, a service an earlier test
    left dead is started again and the workers serve the registry's current model."""
    _distributed.revive()
    _distributed.settle()
    return _distributed


@pytest.fixture(scope="session")
def embedded_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    """The run's `make run`: `python -m embedded` with the bundled model and the seeded sample
    data, its operator token the one it printed (tests.support.embedded). Shared: a test may
    predict, upload and train, but leaves the served model as it found it (roll back what it
    promotes) and assumes no catalog count; a test that kills, stops or measures the process
    starts its own."""
    with start_embedded(tmp_path_factory.mktemp("embedded")) as system:
        yield system
