"""The audit log under a flood: a token's calls are limited, its repeated refusals written as one
event with their count, and `GET /audit` reads the newest events without listing the whole log."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import AuditEvent, AuditLog
from gateway.keys import STORE
from shared.registry import ModelRegistry
from shared.store import ObjectStore, open_store
from tests.gateway.conftest import Client, MakeClient
from tests.support.tokens import CONTRIBUTOR, OPERATOR

pytestmark = pytest.mark.timeout(60)


async def audit(client: Client, limit: int = 50) -> list[dict[str, Any]]:
    response = await client.get("/audit", params={"limit": str(limit)}, headers=OPERATOR)
    assert response.status == 200
    events: list[dict[str, Any]] = (await response.json())["events"]
    return events


async def test_a_flood_of_refused_calls_leaves_the_real_events_in_view(
        make_client: MakeClient, tmp_path: Path, tiny_model_dir: Path) -> None:
    await ModelRegistry(await open_store(tmp_path.as_uri())).bootstrap(tiny_model_dir)
    client = await make_client(with_worker=False, token_calls_per_min=100)
    for _ in range(3):  # real events, older than the flood
        assert (await client.post("/models/tiny-v1/promote", headers=OPERATOR)).status == 200
    flood = 600
    answers = await asyncio.gather(*[client.post("/retrain", json={}, headers=CONTRIBUTOR)
                                     for _ in range(flood)])
    statuses = [a.status for a in answers]
    assert statuses.count(403) == 100 and statuses.count(429) == flood - 100  # the token's minute is spent
    limited = next(a for a in answers if a.status == 429)
    assert (await limited.json())["error"]["code"] == "too_many_calls"
    assert int(limited.headers["Retry-After"]) >= 1
    assert (await client.post("/models/rollback", headers=OPERATOR)).status == 409  # a real event after it

    events = await audit(client)
    refused = [e for e in events if e["actor"] == "contributor"]
    assert len(refused) <= 4  # the first 403 and 429, and one count of the repeats of each
    assert sum(e["repeats"] for e in refused) == flood
    assert {(e["outcome"], e["status"]) for e in refused} == {("insufficient_role", 403),
                                                             ("too_many_calls", 429)}
    real = [(e["action"], e["outcome"]) for e in events if e["actor"] == "operator"]
    assert real == [("rollback", "nothing_to_roll_back")] + [("promote", "ok")] * 3  # none buried
    stored = [key for key in await client.app[STORE].list("audit/") if key.endswith(".json")]
    assert len(stored) <= 3 + 1 + 4, len(stored)  # was one object per refused call


class CountingStore:
    """An ObjectStore that counts the keys its listings return."""

    def __init__(self, store: ObjectStore) -> None:
        self.store, self.listed = store, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def list(self, prefix: str = "") -> list[str]:
        keys = await self.store.list(prefix)
        self.listed += len(keys)
        return keys


async def test_reading_the_newest_events_lists_only_the_hours_it_needs(tmp_path: Path) -> None:
    store = CountingStore(await open_store(tmp_path.as_uri()))
    log = AuditLog(store)  # an ObjectStore by delegation (__getattr__)
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    for hour in range(48):  # two days, 20 events an hour: 960 events
        for n in range(20):
            await log.record(AuditEvent(at=start + dt.timedelta(hours=hour, seconds=n), action="upload",
                                        actor="bob", role="contribute", status=202, outcome="ok"))
    store.listed = 0
    newest = await log.recent(25)
    assert [e.at for e in newest] == sorted((e.at for e in newest), reverse=True)
    assert newest[0].at == start + dt.timedelta(hours=47, seconds=19)
    assert newest[-1].at == start + dt.timedelta(hours=46, seconds=15)
    assert store.listed <= 2 + 24 + 2 * 20, store.listed  # days, one day's hours, two hours: not 960


async def test_repeats_still_counted_are_written_when_the_window_ends_or_the_gateway_stops(
        tmp_path: Path) -> None:
    store = await open_store(tmp_path.as_uri())
    log = AuditLog(store, window_s=0.2)
    log.start()

    def refusal() -> AuditEvent:
        return AuditEvent(action="retrain", actor="contributor", role="contribute", status=403,
                          outcome="insufficient_role")

    for _ in range(5):
        await log.record(refusal())
    await asyncio.sleep(0.5)  # the window ended: the flusher wrote the count
    counts = [e.repeats for e in await AuditLog(store).recent(10)]
    assert counts == [4, 1]
    for _ in range(3):
        await log.record(refusal())
    await log.close()
    assert [e.repeats for e in await AuditLog(store).recent(10)] == [2, 1, 4, 1]
