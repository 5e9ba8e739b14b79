"""`GET /models` (open), `POST /models/{version}/promote` and `POST /models/rollback` (operators).

`GET /models` answers a page of the versions and one of the promotions, each read from its
newest end (`shared.registry`): `?limit=` of each, `?after=` (the `next` of the versions' page
before) and `?history_after=` (the `history_next` of the promotions' page before). Within a page
both are oldest first, as the whole lists were before they had pages.

A version the promotion gate rejected is promoted only with `{"force": true, "reason": "..."}`;
who forced it and why goes to the audit log. The registry records the promotion (every one of
concurrent promotions, `shared.registry`); the broadcast that follows only hurries the workers,
which reconcile with the registry's pointer anyway, so a broadcast that fails does not fail the
promotion.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from gateway.audit import AUDIT_DRAFT
from gateway.json_body import read_json
from gateway.keys import BUS, REGISTRY, SETTINGS
from gateway.paging import cursor, parse_limit, parse_position
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
    """`GET /models?limit=N&after=NEXT&history_after=HISTORY_NEXT`: the current version, a page of
    the versions in the order they were published and a page of the promotions (each up to `limit`,
    the newest when no cursor is given, oldest first within the page), with the cursors of the
    pages before them (null: none). Raises BadRequest for a bad limit or cursor."""
    registry = request.app[REGISTRY]
    limit = parse_limit(request.query.get("limit"), request.app[SETTINGS])
    after = parse_position(request.query.get("after"))
    history_after = parse_position(request.query.get("history_after"), "history_after")
    current, (manifests, earlier), (history, history_earlier) = await asyncio.gather(
        registry.current_version(), registry.versions_page(limit, after),
        registry.history_page(limit, history_after))
    versions = [
        {"version": m.version, "created_at": m.created_at.isoformat(), "classes": m.classes,
         "backbone": m.backbone, "parent_version": m.parent_version, "metrics": m.metrics,
         "gate": m.gate.model_dump(mode="json") if m.gate else None, "current": m.version == current,
         "tracking_url": m.tracking_url}
        for m in manifests
    ]
    return web.json_response({"current": current, "versions": versions, "next": cursor(earlier),
                              "history": history, "history_next": cursor(history_earlier)})


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
