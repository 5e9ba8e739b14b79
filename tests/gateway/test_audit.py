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


async def test_pages_walk_the_whole_log_newest_first_across_hours_and_days(tmp_path: Path) -> None:
    log = AuditLog(await open_store(tmp_path.as_uri()))
    start = dt.datetime(2026, 3, 1, 22, 50, tzinfo=dt.UTC)
    written = []
    for minutes in range(0, 200, 7):  # across four hours and a midnight
        event = AuditEvent(at=start + dt.timedelta(minutes=minutes), action="upload", actor="bob",
                           role="contribute", status=202, outcome="ok")
        await log.record(event)
        written.append(event.event_id)
    pages: list[list[str]] = []
    after: str | None = None
    while True:
        events, after = await log.page(4, after)
        pages.append([e.event_id for e in events])
        if after is None:
            break
    assert [i for page in pages for i in page] == written[::-1]
    assert [len(page) for page in pages] == [4] * 7 + [1]


async def test_events_past_the_retention_are_left_out_and_swept_a_day_at_a_time(tmp_path: Path) -> None:
    store = await open_store(tmp_path.as_uri())
    now = dt.datetime.now(dt.UTC)
    for days in (40, 39, 2, 0):
        await AuditLog(store).record(AuditEvent(at=now - dt.timedelta(days=days), action="promote",
                                                actor="ops", role="operator", status=200, outcome="ok",
                                                detail={"days": days}))
    log = AuditLog(store, retention_s=30 * 86400)
    assert [e.detail["days"] for e in await log.recent(10)] == [0, 2]
    assert await AuditLog(store).sweep_expired() == 0, "no retention: nothing goes"
    assert await log.sweep_expired(max_days=1) == 1
    assert await log.sweep_expired() == 1
    assert await log.sweep_expired() == 0
    assert [e.detail["days"] for e in await AuditLog(store).recent(10)] == [0, 2]
    assert len(await store.list("audit/days/")) == 2 and len(await store.list("audit/events/")) == 2


async def test_get_audit_answers_pages_with_a_next_cursor(
        make_client: MakeClient, tmp_path: Path, tiny_model_dir: Path) -> None:
    await ModelRegistry(await open_store(tmp_path.as_uri())).bootstrap(tiny_model_dir)
    client = await make_client(with_worker=False, page_size=2, max_page_size=3)
    for _ in range(3):
        assert (await client.post("/models/tiny-v1/promote", headers=OPERATOR)).status == 200
    first = await (await client.get("/audit", headers=OPERATOR)).json()
    assert len(first["events"]) == 2 and first["next"]
    second = await (await client.get("/audit", params={"after": first["next"]}, headers=OPERATOR)).json()
    assert len(second["events"]) == 1 and second["next"] is None
    ids = [e["event_id"] for e in first["events"] + second["events"]]
    assert len(set(ids)) == 3
    for params, code in (({"limit": "4"}, "invalid_limit"), ({"after": "../x"}, "invalid_cursor")):
        response = await client.get("/audit", params=params, headers=OPERATOR)
        assert response.status == 400 and (await response.json())["error"]["code"] == code
