"""The audit log: who uploaded, retrained, promoted, rolled back, forced or cancelled what, and
how it ended.

One JSON object per event in the object store, filed by the hour it happened in:

    audit/events/<YYYYMMDD>/<HH>/<UTC time>-<id>.json   the event
    audit/days/<YYYYMMDD>, audit/hours/<YYYYMMDD>/<HH>  empty markers: which days and hours have events

Every write is a new key (gateways never race on a shared file) and keys sort by time, so
`GET /audit` (operators) reads newest first by listing the days, then that day's hours, then only
the hours it needs, never the whole log.

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
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.tokens import Principal, RoleName
from shared.errors import BadRequest
from shared.manifest import utcnow
from shared.messages import new_id
from shared.store import ObjectStore

log = logging.getLogger(__name__)
EVENTS, DAYS, HOURS = "audit/events/", "audit/days/", "audit/hours/"
DEFAULT_LIMIT, MAX_LIMIT = 50, 1000
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


class AuditLog:
    """Audit events in an `ObjectStore`. Loop-only; `start()` its flusher, `close()` it."""

    def __init__(self, store: ObjectStore, *, window_s: float = REPEAT_WINDOW_S) -> None:
        self.store, self.window_s = store, window_s
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
        """The newest `limit` events, newest first (the counts held so far written first). Lists
        the days, then the hours of the days it reads, then only the hours it needs."""
        await self.flush()
        keys: list[str] = []
        for day in sorted(map(_last_part, await self.store.list(DAYS)), reverse=True):
            for hour in sorted(map(_last_part, await self.store.list(f"{HOURS}{day}/")), reverse=True):
                in_hour = sorted(await self.store.list(f"{EVENTS}{day}/{hour}/"), reverse=True)
                keys += in_hour[:limit - len(keys)]
                if len(keys) >= limit:
                    break
            if len(keys) >= limit:
                break
        return [AuditEvent.model_validate_json(await self.store.get(key)) for key in keys]


AUDIT = web.AppKey("audit", AuditLog)
AUDIT_DRAFT = web.RequestKey("audit_draft", AuditDraft)


def parse_limit(raw: str | None) -> int:
    """The `limit` query parameter: 1 to MAX_LIMIT, DEFAULT_LIMIT when absent; raises
    BadRequest otherwise."""
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6) or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT} (got {raw[:40]!r})",
                         code="invalid_limit")
    return int(raw)


async def list_events(request: web.Request) -> web.Response:
    """`GET /audit?limit=N`: the newest events first (operators only; guarded in app.py)."""
    events = await request.app[AUDIT].recent(parse_limit(request.query.get("limit")))
    return web.json_response({"events": [e.model_dump(mode="json") for e in events]})
