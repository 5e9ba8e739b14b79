"""Reads on hot paths cost the same with 10,000 records of history as with ten (issue 25): the
current version (every worker, every DERMASCAN_MODEL_RECONCILE_S), the training claim check
(POST /retrain), the first page of `GET /audit` and `GET /models` (through their handlers) and the
embedded start's read of unfinished jobs. The history is written straight into the store's
layout (as the services leave it), then each read runs against a store that counts its calls: on
local disk with 10,000 records; on S3 (moto's server) with 1,100, past one listing page of 1,000
keys, counting the HTTP requests too."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway import audit, models
from gateway.audit import AUDIT, AuditEvent, AuditLog, event_key
from gateway.keys import REGISTRY, SETTINGS
from gateway.settings import GatewaySettings
from shared.jobs import Job, JobStore
from shared.manifest import ModelManifest, utcnow
from shared.registry import ModelRegistry
from shared.store import ObjectStore, open_store
from shared.training_claim import training_holder

pytestmark = pytest.mark.timeout(300)
PAGE = 5  # a page smaller than the short history, so both fill it
LIVE = 3  # unfinished jobs, the same in both stores
BIG = {"local": 10_000, "s3": 1_100}
Put = Callable[[str, bytes], None]


class CountingStore:
    """An ObjectStore that counts its calls and the keys its listings return."""

    def __init__(self, store: ObjectStore) -> None:
        self.store, self.calls, self.listed = store, Counter[str](), 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.store, name)
        if name not in ("get", "get_versioned", "put", "put_if", "create", "exists", "delete"):
            return attribute

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await attribute(*args, **kwargs)

        return counted

    async def list(self, prefix: str = "") -> list[str]:
        self.calls["list"] += 1
        keys = await self.store.list(prefix)
        self.listed += len(keys)
        return keys

    def reset(self) -> None:
        self.calls, self.listed = Counter(), 0


def history(n: int) -> Iterator[tuple[str, bytes | str | dict[str, Any]]]:
    """`n` promotions, published versions, claims, finished jobs and audit events (one a minute),
    and `LIVE` unfinished jobs, as (key, body) laid out as the services leave them."""
    now = utcnow()
    yield ("models/published/0000000000.json", {"versions": []})
    for i in range(1, n + 1):
        version = f"v{i:05d}"
        manifest = ModelManifest(version=version, classes=["melanoma", "melanocytic_nevi"],
                                 input_size=(32, 32), created_at=now - dt.timedelta(minutes=n - i))
        yield (f"models/{version}/manifest.json", manifest.model_dump_json())
        yield (f"models/published/{i:010d}.json", {"version": version, "published_id": f"p{i}"})
        yield (f"models/promotions/{i:010d}.json", {"version": version, "promoted_at": now.isoformat(),
                                                 "promotion_id": f"r{i}"})
    yield ("models/published.json", {"version": f"v{n:05d}", "number": n})
    yield ("models/current.json", {"version": f"v{n:05d}", "promoted_at": now.isoformat(), "promotion": n})

    ended = Job(kind="ingest", state="succeeded", created_at=now - dt.timedelta(days=1),
                finished_at=now - dt.timedelta(days=1))
    template = ended.model_dump_json().replace(ended.job_id, "{job_id}")
    day = f"{ended.finished_at:%Y%m%d}" if ended.finished_at else ""
    for i in range(n):
        job_id = f"{i:032x}"
        yield (f"jobs/{job_id}.json", template.replace("{job_id}", job_id))
        yield (f"jobs/ended/{day}/{job_id}", b"")
        yield (f"jobs/training-claims/{i + 1:010d}.json", {"job_id": job_id, "claimed_at": now.isoformat()})
    yield (f"jobs/ended-days/{day}", b"")
    live = [Job(kind="train", state="running")] + [Job(kind="ingest") for _ in range(LIVE - 1)]
    for job in live:
        yield (f"jobs/{job.job_id}.json", job.model_dump_json())
        yield (f"jobs/live/{job.job_id}", {"marked_at": now.isoformat()})
    claim = {"job_id": live[0].job_id, "claimed_at": now.isoformat()}  # the running training holds it
    yield (f"jobs/training-claims/{n + 1:010d}.json", claim)
    yield ("jobs/training-claims/head.json", {**claim, "number": n + 1})
    yield ("jobs/indexed.json", {"since": now.isoformat()})

    newest = now.replace(minute=30, second=0, microsecond=0) - dt.timedelta(hours=1)
    hours: set[str] = set()
    for i in range(n):
        event = AuditEvent(at=newest - dt.timedelta(minutes=i), action="upload", actor="bob",
                           role="contribute", status=202, outcome="ok")
        yield (event_key(event), event.model_dump_json())
        hours.add(f"{event.at:%Y%m%d/%H}")
    for hour in hours:
        yield (f"audit/days/{hour[:8]}", b"")
        yield (f"audit/hours/{hour}", b"")


def _bytes(body: bytes | str | dict[str, Any]) -> bytes:
    return body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()


def write_files(root: Path, n: int) -> None:
    for key, body in history(n):
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_bytes(body))


def write_objects(client: Any, bucket: str, n: int) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda item: client.put_object(Bucket=bucket, Key=item[0], Body=_bytes(item[1])),
                      history(n)))


Read = Callable[[], Awaitable[object]]
Costs = dict[str, tuple[dict[str, int], int, int]]


async def costs(store: ObjectStore) -> Costs:
    """What each read costs on `store`: its calls by method, the keys listed, and (on S3) the
    HTTP requests."""
    counting = CountingStore(store)
    shared: Any = counting  # an ObjectStore by delegation
    requests = Counter[str]()
    s3 = getattr(store, "_client", None)
    if s3 is not None:
        s3.meta.events.register("before-send.s3", lambda **_: requests.update(["sent"]))
    app = web.Application()
    app[SETTINGS], app[REGISTRY], app[AUDIT] = GatewaySettings(), ModelRegistry(shared), AuditLog(shared)
    app.router.add_get("/models", models.list_models)
    app.router.add_get("/audit", audit.list_events)  # (its operator guard reads no store)
    client = TestClient(TestServer(app))
    await client.start_server()
    jobs = JobStore(shared)

    async def page(path: str) -> dict[str, Any]:
        response = await client.get(path, params={"limit": str(PAGE)})
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body

    reads: dict[str, Read] = {
        "current version": ModelRegistry(shared).current_version,
        "training claim check": lambda: training_holder(jobs, stale_after_s=60),
        "GET /models, first page": lambda: page("/models"),
        "GET /audit, first page": lambda: page("/audit"),
        "unfinished jobs (embedded start)": jobs.unfinished,
    }
    found: Costs = {}
    try:
        for name, read in reads.items():
            counting.reset()
            requests.clear()
            answer = await read()
            found[name] = (dict(counting.calls), counting.listed, requests["sent"])
            check(name, answer)
    finally:
        await client.close()
    return found


def check(name: str, answer: Any) -> None:
    """Each read still answers what it should."""
    if name == "GET /models, first page":
        assert len(answer["versions"]) == PAGE and answer["next"] and len(answer["history"]) == PAGE
        assert answer["versions"][-1]["current"] and answer["current"] == answer["history"][-1]["version"]
    elif name == "GET /audit, first page":
        assert len(answer["events"]) == PAGE and answer["next"]
    elif name == "unfinished jobs (embedded start)":
        assert len(answer) == LIVE
    elif name == "training claim check":
        assert isinstance(answer, Job) and answer.state == "running"


@pytest.mark.parametrize("kind", ["local", "s3"])
async def test_each_hot_read_costs_the_same_store_calls_with_a_long_history_as_with_ten(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest, unique: str) -> None:
    many = BIG[kind]
    if kind == "local":
        small, big = tmp_path / "ten", tmp_path / "many"
        await asyncio.gather(asyncio.to_thread(write_files, small, 10),
                             asyncio.to_thread(write_files, big, many))
        stores = [await open_store(small.as_uri()), await open_store(big.as_uri())]
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        stores = [await open_store(f"s3://{unique}-ten", endpoint_url=endpoint),
                  await open_store(f"s3://{unique}-many", endpoint_url=endpoint)]
        await asyncio.gather(*(asyncio.to_thread(write_objects, store._client, store.bucket, n)  # type: ignore[attr-defined]
                               for store, n in zip(stores, (10, many), strict=True)))
    try:
        with_ten, with_many = await costs(stores[0]), await costs(stores[1])
    finally:
        for store in stores:
            await store.close()
    for name, (calls, listed, sent) in with_many.items():
        ten_calls, ten_listed, ten_sent = with_ten[name]
        http = (f", {sent} HTTP requests", f", {ten_sent} HTTP requests") if kind == "s3" else ("", "")
        print(f"{kind}, {many} records, {name}: {sum(calls.values())} store calls {calls}, {listed} keys "
              f"listed{http[0]} (with ten: {sum(ten_calls.values())} calls, {ten_listed} keys listed"
              f"{http[1]})")
    assert {name: c[0] for name, c in with_many.items()} == {name: c[0] for name, c in with_ten.items()}
    assert {name: c[2] for name, c in with_many.items()} == {name: c[2] for name, c in with_ten.items()}
    assert with_many["current version"][0] == {"get": 2}
    # nothing listed grows with the history: the live jobs; the audit log's days (as many as its
    # retention keeps), the newest day's hours and the newest hour's events
    assert all(listed == 0 for name, (_, listed, _) in with_many.items()
               if not name.startswith(("GET /audit", "unfinished")))
    assert with_many["unfinished jobs (embedded start)"][1] == LIVE
    assert with_many["GET /audit, first page"][1] <= many // (24 * 60) + 2 + 24 + 60
