"""The audit log: who uploaded, retrained, promoted, rolled back, forced or cancelled what, and
how it ended.

One JSON object per event at `audit/<UTC time>-<id>.json` in the object store: every write is a
new key, so gateways never race on a shared file, and keys sort by time. `GET /audit` (operators)
lists the newest first.
"""

from __future__ import annotations

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
PREFIX = "audit/"
DEFAULT_LIMIT, MAX_LIMIT = 50, 1000
Action = Literal["upload", "retrain", "promote", "rollback", "cancel"]


class AuditEvent(BaseModel):
    """One audited request, as `GET /audit` returns it."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(default_factory=new_id, description="Unique id.")
    at: dt.datetime = Field(default_factory=utcnow, description="When the request was answered (UTC).")
    action: Action = Field(description="upload, retrain, promote, rollback or cancel (a training job).")
    actor: str = Field(description="Name of the token that sent the request.")
    role: RoleName = Field(description="That token's role.")
    target: str | None = Field(None, description="Model version or job id acted on, when known.")
    status: int = Field(description="HTTP status of the answer.")
    outcome: str = Field(description="'ok', or the error code of the answer (e.g. 'insufficient_role').")
    forced: bool = Field(False, description="A promotion that overrode the gate's rejection.")
    reason: str | None = Field(None, description="Why, as the operator gave it (forced promotions).")
    detail: dict[str, Any] = Field(default_factory=dict, description="Action-specific figures.")


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


class AuditLog:
    """Audit events in an `ObjectStore`. Loop-only."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    async def record(self, event: AuditEvent) -> None:
        """Store `event` under a key of its own. A store failure is logged with the whole event
        (the action it describes has already happened) and not raised."""
        key = f"{PREFIX}{event.at:%Y%m%dT%H%M%S%f}Z-{event.event_id[:12]}.json"
        try:
            await self.store.put(key, event.model_dump_json().encode(), content_type="application/json")
        except Exception:
            log.exception("audit event not stored: %s", event.model_dump_json())

    async def recent(self, limit: int) -> list[AuditEvent]:
        """The newest `limit` events, newest first."""
        keys = sorted(await self.store.list(PREFIX))[-limit:][::-1]
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
