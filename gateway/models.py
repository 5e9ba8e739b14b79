"""`GET /models` (open), `POST /models/{version}/promote` and `POST /models/rollback` (operators).

A version the promotion gate rejected is promoted only with `{"force": true, "reason": "..."}`;
who forced it and why goes to the audit log. The registry records the promotion (every one of
concurrent promotions, `shared.registry`); the broadcast that follows only hurries the workers,
which reconcile with the registry's pointer anyway, so a broadcast that fails does not fail the
promotion.
"""

from __future__ import annotations

import logging
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from gateway.audit import AUDIT_DRAFT
from gateway.json_body import read_json
from gateway.keys import BUS, REGISTRY, SETTINGS
from shared.errors import Conflict, DermaScanError
from shared.messages import ModelPromoted, encode

log = logging.getLogger(__name__)

Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=500)]


class PromoteRequest(BaseModel):
    """The JSON body of `POST /models/{version}/promote` (no body: no force)."""

    model_config = ConfigDict(extra="forbid")

    force: bool = Field(False, description="Serve the version even though the promotion gate rejected it.")
    reason: Reason | None = Field(None, description="Why; required with `force`, kept in the audit log.")

    @model_validator(mode="after")
    def _forcing_needs_a_reason(self) -> PromoteRequest:
        if self.force and self.reason is None:
            raise ValueError("a forced promotion needs a 'reason' (kept in the audit log)")
        return self


class NoBody(BaseModel):
    """Routes that take no options: an empty body or `{}`."""

    model_config = ConfigDict(extra="forbid")


async def list_models(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    current = await registry.current_version()
    versions = [
        {"version": m.version, "created_at": m.created_at.isoformat(), "classes": m.classes,
         "backbone": m.backbone, "parent_version": m.parent_version, "metrics": m.metrics,
         "gate": m.gate.model_dump(mode="json") if m.gate else None, "current": m.version == current}
        for m in await registry.versions()
    ]
    return web.json_response({"current": current, "versions": versions, "history": await registry.history()})


async def _announce(request: web.Request, version: str) -> web.Response:
    """Tell the workers, and answer with what the registry serves now (a promotion made at the
    same moment may have come after this one: `promoted` is this request's)."""
    announced = True
    try:
        await request.app[BUS].broadcast(request.app[SETTINGS].models_exchange,
                                         encode(ModelPromoted(version=version)))
    except DermaScanError as exc:
        announced = False
        log.warning("promoted %s but could not announce it (%s); workers pick it up from the registry",
                    version, exc)
    current = await request.app[REGISTRY].current_version()
    return web.json_response({"current": current, "promoted": version, "announced": announced})


async def promote(request: web.Request) -> web.Response:
    """Serve `version`. Raises NotFound for an unknown one, Conflict for one the gate rejected
    unless the body forces it with a reason."""
    options = await read_json(request, PromoteRequest, what="the promotion request")
    version = request.match_info["version"]
    draft = request[AUDIT_DRAFT]
    draft.forced, draft.reason = options.force, options.reason
    gate = (await request.app[REGISTRY].manifest(version)).gate
    draft.detail = {"gate": "none" if gate is None else "passed" if gate.passed else "rejected"}
    if gate is not None and not gate.passed and not options.force:
        raise Conflict(f"the promotion gate rejected {version} ({'; '.join(gate.reasons) or 'no reasons'}); "
                       'to serve it anyway send {"force": true, "reason": "..."}', code="gate_rejected")
    await request.app[REGISTRY].promote(version)
    return await _announce(request, version)


async def rollback(request: web.Request) -> web.Response:
    """Serve the version that was current before this one; raises Conflict when there is none."""
    await read_json(request, NoBody, what="the rollback request")
    draft = request[AUDIT_DRAFT]
    draft.detail = {"from": await request.app[REGISTRY].current_version()}
    version = await request.app[REGISTRY].rollback()
    draft.target = version
    return await _announce(request, version)
