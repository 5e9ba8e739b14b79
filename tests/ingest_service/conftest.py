"""The ingest service as the gateway drives it: files staged in a store, a job record, one
message on the ingest queue; the test then reads the job record as `GET /jobs/{id}` would."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ingest_service.metrics import IngestMetrics
from ingest_service.service import IngestService
from ingest_service.settings import IngestSettings
from shared.bus import MessageBus, connect_bus
from shared.jobs import IngestResult, Job, JobStore
from shared.messages import IngestRequest, StagedFile, encode
from shared.store import ObjectStore, open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

import make_hostile_corpus as make_hostile_corpus  # re-exported: the ingest tests build files with it


def noise_images(count: int, label: str = "melanoma", *, first_seed: int = 100) -> list[tuple[str, bytes]]:
    """`count` distinct small JPEGs named `<label>_<n>.jpg`."""
    return [(f"{label}_{n}.jpg", make_hostile_corpus.noise_image(first_seed + n)) for n in range(count)]


@dataclass
class Ingest:
    """A running ingest service with the store and bus it uses; the test stages files and reads
    jobs through `direct` (under a FlakyStore's failures, like the gateway on its own connection)."""

    service: IngestService
    bus: MessageBus
    store: ObjectStore
    metrics: CollectorRegistry

    @property
    def direct(self) -> ObjectStore:
        return self.store.inner if isinstance(self.store, FlakyStore) else self.store

    async def submit(self, files: list[tuple[str, bytes]], *, label: str | None = None) -> str:
        """Stage `files` (name, bytes) and queue the job, as `POST /upload-bulk` does; its id."""
        job = Job(kind="ingest", progress={"files": len(files), "done": 0}, result=IngestResult())
        staged = []
        for index, (name, data) in enumerate(files):
            key = f"uploads/{job.job_id}/{index:05d}"
            await self.direct.put(key, data)
            staged.append(StagedFile(key=key, filename=name, size=len(data)))
        await JobStore(self.direct).save(job)
        request = IngestRequest(job_id=job.job_id, files=staged, label=label)
        await self.bus.publish(self.service.settings.ingest_queue, encode(request))
        return job.job_id

    async def wait(self, job_id: str, timeout: float = 30) -> Job:
        """The job record once it is final."""
        jobs = JobStore(self.direct)
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            job = await jobs.get(job_id)
            if job.final:
                return job
            await asyncio.sleep(0.05)
        raise TimeoutError(f"job {job_id} not final after {timeout} s: {job.state} {job.progress}")

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.get_sample_value(f"dermascan_ingest_service_{name}", labels) or 0.0


MakeIngest = Callable[..., Awaitable[Ingest]]


@pytest.fixture
async def make_ingest(tmp_path: Path) -> AsyncIterator[MakeIngest]:
    """Start an ingest service on the in-memory bus and a local store (or `store=`, `bus=`);
    keyword arguments are IngestSettings overrides. Stops each service, then closes its bus."""
    started: list[tuple[IngestService, MessageBus]] = []

    async def make(*, store: ObjectStore | None = None, bus: MessageBus | None = None,
                   **overrides: Any) -> Ingest:
        settings = IngestSettings(store_url=tmp_path.as_uri(), metrics_port=0, **overrides)
        bus = bus or await connect_bus("memory://")
        store = store or await open_store(settings.store_url)
        registry = CollectorRegistry()
        service = IngestService(settings, bus, store, IngestMetrics(registry))
        await service.start()
        started.append((service, bus))
        return Ingest(service, bus, store, registry)

    yield make
    for service, bus in reversed(started):
        await service.stop()
        await bus.close()


def result_of(job: Job) -> IngestResult:
    """The job's typed result (an ingest job has one from the moment it is queued)."""
    assert isinstance(job.result, IngestResult), job.result
    return job.result


def outcomes_by_name(job: Job) -> dict[str, dict[str, Any]]:
    """Each file's outcome as `GET /jobs/{id}` shows it (fields that do not apply left out)."""
    return {o.filename: o.model_dump(mode="json") for o in result_of(job).files}


class FlakyStore:
    """A store that fails the calls `failing(operation, key)` picks, with `error()` (a
    connection error by default, as boto3 raises when S3 is down). Loop-only."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner, self.url = inner, inner.url
        self.failing: Callable[[str, str], bool] = lambda operation, key: False
        self.error: Callable[[], Exception] = lambda: ConnectionError("connection refused (test outage)")
        self.failures = 0

    def _check(self, operation: str, key: str) -> None:
        if self.failing(operation, key):
            self.failures += 1
            raise self.error()

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        self._check("put", key)
        await self.inner.put(key, data, content_type=content_type)

    async def create(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        self._check("create", key)
        await self.inner.create(key, data, content_type=content_type)

    async def put_if(self, key: str, data: bytes, *, version: str | None,
                     content_type: str = "application/octet-stream") -> str:
        self._check("put", key)
        return await self.inner.put_if(key, data, version=version, content_type=content_type)

    async def get(self, key: str) -> bytes:
        self._check("get", key)
        return await self.inner.get(key)

    async def get_versioned(self, key: str) -> tuple[bytes, str]:
        self._check("get", key)
        return await self.inner.get_versioned(key)

    async def exists(self, key: str) -> bool:
        self._check("exists", key)
        return await self.inner.exists(key)

    async def list(self, prefix: str = "") -> list[str]:
        self._check("list", prefix)
        return await self.inner.list(prefix)

    async def list_stamped(self, prefix: str = "") -> dict[str, str]:
        self._check("list", prefix)
        return await self.inner.list_stamped(prefix)

    async def delete(self, key: str) -> None:
        self._check("delete", key)
        await self.inner.delete(key)

    async def ping(self) -> bool:
        return await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()
