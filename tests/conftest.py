"""Fixtures shared by every test: real RabbitMQ, a real S3 server (moto), tiny models, images."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import reliability
from tests.support.models import make_tiny_model
from tests.support.processes import free_port, running, wait_http

FIXTURES = Path(__file__).parent / "fixtures"
RABBIT_URL = os.environ.get("DERMASCAN_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: The split secret test systems draw with (DERMASCAN_SPLIT_SECRET), so which images are held out
#: is the same run after run, like a seed; tests of the secret a store makes for itself unset it.
TEST_SPLIT_SECRET = "dermascan-tests-split-secret"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write var/reliability.md from what this session's fault tests counted (if any ran);
    `make reliability-doc` copies it into the tracked docs/reliability.md."""
    args = " ".join(session.config.invocation_params.args)
    reliability.write_doc(f"python -m pytest {args}".strip())


@pytest.fixture(scope="session")
def rabbit_url() -> str:
    """The real RabbitMQ that `make test` made sure is running."""
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
def fixed_split_secret() -> Iterator[None]:
    """Every service a test starts, in this process or another, draws splits with
    TEST_SPLIT_SECRET (a random one per store would change the held-out images run to run)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DERMASCAN_SPLIT_SECRET", TEST_SPLIT_SECRET)
        yield


@pytest.fixture(scope="session", autouse=True)
def delete_test_queues() -> Iterator[None]:
    """At the end, delete the broker queues and exchanges this session's tests created (by
    their unique prefix), so a shared RabbitMQ does not fill up run after run."""
    yield
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
