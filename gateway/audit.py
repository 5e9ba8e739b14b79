"""The audit log: who uploaded, retrained, promoted, rolled back, forced or cancelled what, and
how it ended.

One JSON object per event in the object store, filed by the hour it happened in:

    audit/events/<YYYYMMDD>/<HH>/<UTC time>-<id>.json   the event
    audit/days/<YYYYMMDD>, audit/hours/<YYYYMMDD>/<HH>  empty markers: which days and hours have events

Every write is a new key (gateways never race on a shared file) and keys sort by time, so
`GET /audit` (operators) reads a page newest first by listing the days, then that day's hours, then
only the hours it needs, never the whole log; its `next` (the last event's name) starts the page
after it in that event's hour. Events older than the retention are left out, and the gateway's
sweep (`sweep_expired`) deletes them a whole day at a time, so the days listed stay as many as the
retention keeps.

A flood of refusals cannot bury the log: a token's first refusal of a kind (same action, status
and code) is written at once, and the same refusal again within `REPEAT_WINDOW_S` only counted;
the count is written as one event (`repeats`, `first_repeat_at`) when the window ends, when the
log is read, or when the gateway stops. With the per-token call limit (gateway/auth.py) that
bounds what one token can add to the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.keys import SETTINGS
from gateway.paging import parse_limit
from gateway.tokens import Principal, RoleName
from shared.errors import BadRequest, NotFound
from shared.manifest import utcnow
from shared.messages import new_id
from shared.store import ObjectStore

log = logging.getLogger(__name__)
EVENTS, DAYS, HOURS = "audit/events/", "audit/days/", "audit/hours/"
#: Whole days of events one `sweep_expired` deletes at most (a backlog goes at the next sweeps).
SWEEP_DAYS = 7
#: An event's name (its key's last part, less `.json`): the cursor `next` of a page.
_NAME = re.compile(r"(?P<day>[0-9]{8})T(?P<hour>[0-9]{2})[0-9]{10}Z-[0-9a-f]{1,12}")
#: The OpenAPI schema of `GET /audit`'s `after`.
CURSOR_SCHEMA = {"type": "string", "pattern": "^[0-9]{8}T[0-9]{12}Z-[0-9a-f]{1,12}$",
                 "description": "The `next` of the page before (absent: the newest events)."}
#: Seconds during which a token's repeats of one refusal are counted instead of written.
REPEAT_WINDOW_S = 60.0
#: Statuses that count as refusals (aggregated when repeated): a refused token, role or rate.
REFUSALS = frozenset({401, 403, 429})
Action = Literal["upload", "retrain", "promote", "rollback", "cancel"]


class AuditEvent(BaseModel):
    """One audited request (or, with `repeats` > 1, that many identical refusals), as `GET /audit`
    returns it."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(default_factory=new_id, description="Unique id.")
    at: dt.datetime = Field(default_factory=utcnow, description="When the (last) request was answered (UTC).")
    action: Action = Field(description="upload, retrain, promote, rollback or cancel (a training job).")
    actor: str = Field(description="Name of the token that sent the request.")
    role: RoleName = Field(description="That token's role.")
    target: str | None = Field(None, description="Model version or job id acted on, when known.")
    status: int = Field(description="HTTP status of the answer.")
    outcome: str = Field(description="'ok', or the error code of the answer (e.g. 'insufficient_role').")
    forced: bool = Field(False, description="A promotion that overrode the gate's rejection.")
    reason: str | None = Field(None, description="Why, as the operator gave it (forced promotions).")
    detail: dict[str, Any] = Field(default_factory=dict, description="Action-specific figures.")
    repeats: int = Field(1, ge=1, description="Requests this event stands for: more than 1 for the repeats "
                         "of a refusal within a minute of its first (which has an event of its own).")
    first_repeat_at: dt.datetime | None = Field(None, description="When the first of `repeats` came (UTC).")


@dataclass
class AuditDraft:
    """What a handler learns about the request it serves, finished into an `AuditEvent` once
    the answer is known. Handlers fill `target`, `forced`, `reason`, `detail` (and `outcome`
    when they answer an error without raising)."""

    action: Action
    principal: Principal
    target: str | None = None
    forced: bool = False
    reason: str | None = None
    outcome: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def finish(self, status: int, outcome: str) -> AuditEvent:
        return AuditEvent(action=self.action, actor=self.principal.name, role=self.principal.role.label,
                          target=self.target, status=status, outcome=self.outcome or outcome,
                          forced=self.forced, reason=self.reason, detail=self.detail)


@dataclass
class _Repeats:
    """A refusal's window: when it opened, and the repeats counted since the last write."""

    opened: float
    count: int = 0
    first: AuditEvent | None = None
    last: AuditEvent | None = None


def event_key(event: AuditEvent) -> str:
    """Where `event` is stored: under its day and hour, named by its time, so keys sort by time."""
    return f"{EVENTS}{event.at:%Y%m%d/%H}/{event.at:%Y%m%dT%H%M%S%f}Z-{event.event_id[:12]}.json"


def _last_part(key: str) -> str:
    return key.rstrip("/").rpartition("/")[2]


def _name(key: str) -> str:
    return _last_part(key).removesuffix(".json")


def _stamp(at: dt.datetime) -> str:
    """How an event's name begins for an event at `at`: names compare as their times do."""
    return f"{at:%Y%m%dT%H%M%S%f}Z"


class AuditLog:
    """Audit events in an `ObjectStore`. Loop-only; `start()` its flusher, `close()` it. With
    `retention_s` (None or 0: forever), older events are left out of pages and swept."""

    def __init__(self, store: ObjectStore, *, window_s: float = REPEAT_WINDOW_S,
                 retention_s: float | None = None) -> None:
        self.store, self.window_s, self.retention_s = store, window_s, retention_s or None
        self._repeats: dict[tuple[str, str, int, str], _Repeats] = {}
        self._marked: set[str] = set()
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Write the counts of ended windows in the background, until `close()`."""
        self._flusher = asyncio.create_task(self._flush_ended(), name="audit-repeats")

    async def close(self) -> None:
        """Stop the flusher and write every count still held."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()

    async def _flush_ended(self) -> None:
        while True:
            await asyncio.sleep(self.window_s / 4)
            await self.flush(ended_only=True)

    async def record(self, event: AuditEvent) -> None:
        """Store `event`, or count it when it repeats a refusal of the same token within the
        window. A store failure is logged with the whole event (the action it describes has
        already happened) and not raised."""
        if event.status not in REFUSALS:
            await self._write(event)
            return
        now = asyncio.get_running_loop().time()
        key = (event.actor, event.action, event.status, event.outcome)
        window = self._repeats.get(key)
        if window is not None and now - window.opened < self.window_s:
            window.count += 1
            window.first = window.first or event
            window.last = event
            return
        if window is not None:
            await self._write_repeats(window)
        self._repeats[key] = _Repeats(opened=now)
        await self._write(event)

    async def flush(self, *, ended_only: bool = False) -> None:
        """Write the counted repeats (of the windows that ended, with `ended_only`)."""
        now = asyncio.get_running_loop().time()
        for key, window in list(self._repeats.items()):
            ended = now - window.opened >= self.window_s
            if ended or not ended_only:
                await self._write_repeats(window)
            if ended and self._repeats.get(key) is window:
                del self._repeats[key]

    async def _write_repeats(self, window: _Repeats) -> None:
        if not window.count or window.first is None or window.last is None:
            return
        summary = window.last.model_copy(update={"event_id": new_id(), "repeats": window.count,
                                                 "first_repeat_at": window.first.at})
        window.count, window.first, window.last = 0, None, None
        await self._write(summary)

    async def _write(self, event: AuditEvent) -> None:
        day = f"{event.at:%Y%m%d}"
        try:
            for marker in (f"{DAYS}{day}", f"{HOURS}{day}/{event.at:%H}"):
                if marker not in self._marked:  # once per gateway and hour; a put is idempotent
                    await self.store.put(marker, b"")
                    self._marked = {m for m in self._marked if day in m} | {marker}  # today's only
            await self.store.put(event_key(event), event.model_dump_json().encode(),
                                 content_type="application/json")
        except Exception:
            log.exception("audit event not stored: %s", event.model_dump_json())

    async def recent(self, limit: int) -> list[AuditEvent]:
        """The newest `limit` events, newest first: the first `page`."""
        events, _ = await self.page(limit)
        return events

    async def page(self, limit: int, after: str | None = None) -> tuple[list[AuditEvent], str | None]:
        """Up to `limit` events older than the one named `after` (None: the newest), newest first
        (the counts held so far written first), and the name to pass as `after` for the page
        after it (None: the log ends here). Lists the days, then the hours of the days it reads,
        then only the hours it needs. Raises BadRequest when `after` is not an event's name."""
        start = _NAME.fullmatch(after) if after is not None else None
        if after is not None and start is None:
            raise BadRequest(f"after must be the `next` of an earlier page (got {after[:40]!r})",
                             code="invalid_cursor")
        await self.flush()
        oldest = _stamp(utcnow() - dt.timedelta(seconds=self.retention_s)) if self.retention_s else ""
        newer = after or "~"  # every name sorts before "~"
        keys: list[str] = []
        for day in sorted(map(_last_part, await self.store.list(DAYS)), reverse=True):
            if start is not None and day > start["day"]:
                continue
            if day < oldest[:8]:
                break
            for hour in sorted(map(_last_part, await self.store.list(f"{HOURS}{day}/")), reverse=True):
                if start is not None and (day, hour) > (start["day"], start["hour"]):
                    continue
                in_hour = sorted(await self.store.list(f"{EVENTS}{day}/{hour}/"), reverse=True)
                keys += [key for key in in_hour if oldest <= _name(key) < newer][:limit - len(keys)]
                if len(keys) >= limit:
                    break
            if len(keys) >= limit:
                break
        events = await asyncio.gather(*(self._event(key) for key in keys))
        full = bool(keys) and len(keys) >= limit  # else the log ends here
        return [e for e in events if e is not None], (_name(keys[-1]) if full else None)

    async def _event(self, key: str) -> AuditEvent | None:
        try:
            return AuditEvent.model_validate_json(await self.store.get(key))
        except NotFound:
            return None  # swept since it was listed

    async def sweep_expired(self, *, now: dt.datetime | None = None, max_days: int = SWEEP_DAYS) -> int:
        """Delete the events of the `max_days` oldest days wholly older than the retention, with
        their markers; return how many events it deleted. Without a retention, nothing."""
        if self.retention_s is None:
            return 0
        cutoff = (now or utcnow()) - dt.timedelta(seconds=self.retention_s)
        deleted = 0
        for day in sorted(map(_last_part, await self.store.list(DAYS)))[:max_days]:
            if dt.datetime.strptime(day, "%Y%m%d").replace(tzinfo=dt.UTC) + dt.timedelta(days=1) > cutoff:
                break
            for hour in map(_last_part, await self.store.list(f"{HOURS}{day}/")):
                for key in await self.store.list(f"{EVENTS}{day}/{hour}/"):
                    await self.store.delete(key)
                    deleted += 1
                await self.store.delete(f"{HOURS}{day}/{hour}")
            await self.store.delete(f"{DAYS}{day}")
            self._marked = {m for m in self._marked if day not in m}
        return deleted


AUDIT = web.AppKey("audit", AuditLog)
AUDIT_DRAFT = web.RequestKey("audit_draft", AuditDraft)


async def list_events(request: web.Request) -> web.Response:
    """`GET /audit?limit=N&after=NEXT`: a page of events, newest first, and the `next` of the page
    after it (operators only; guarded in app.py)."""
    limit = parse_limit(request.query.get("limit"), request.app[SETTINGS])
    events, after = await request.app[AUDIT].page(limit, request.query.get("after"))
    return web.json_response({"events": [e.model_dump(mode="json") for e in events], "next": after})
