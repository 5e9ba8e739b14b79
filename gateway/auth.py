"""Who may call what: `guard(role, handler)` wraps a route so that it needs a Bearer token of
at least `role`, and, for the audited actions, records the outcome in the audit log.

`401` (with `WWW-Authenticate: Bearer`): no token, or one nobody issued. `403`: a known token
whose role is too low (audited). `POST /predict` needs the `predict` role only when
`DERMASCAN_OPEN_PREDICT` is false; open, it reads no token at all.
"""

from __future__ import annotations

import logging

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from gateway.audit import AUDIT, AUDIT_DRAFT, Action, AuditDraft
from gateway.keys import SETTINGS
from gateway.tokens import Principal, Role, TokenBook
from shared.errors import DermaScanError, Forbidden, Unauthorized

log = logging.getLogger(__name__)
TOKENS = web.AppKey("tokens", TokenBook)
PRINCIPAL = web.RequestKey("principal", Principal)


def bearer_token(request: web.Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None without one; raises
    Unauthorized for another scheme."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send the token as 'Authorization: Bearer <token>'", code="invalid_token")
    return token.strip()


def identify(request: web.Request) -> Principal:
    """The caller; raises Unauthorized when it sent no token or an unknown one."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("this needs an API token: send 'Authorization: Bearer <token>'",
                           code="missing_token")
    principal = request.app[TOKENS].identify(token)
    if principal is None:
        log.warning("unknown token on %s %s from %s", request.method, request.path, request.remote)
        raise Unauthorized("the token is not known to this gateway", code="invalid_token")
    return principal


def check_role(principal: Principal, needed: Role) -> None:
    """Raises Forbidden unless `principal` has `needed` or a higher role."""
    if principal.role < needed:
        raise Forbidden(f"the token {principal.name!r} has the {principal.role.label} role; "
                        f"this needs the {needed.label} role", code="insufficient_role")


def guard(needed: Role, handler: Handler, *, action: Action | None = None) -> Handler:
    """`handler` behind a token of at least `needed`. With `action`, every answer to a known
    token (refusals for a low role included) is recorded in the audit log; the handler adds
    what it learns through `request[AUDIT_DRAFT]`."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        if needed is Role.PREDICT and request.app[SETTINGS].open_predict:
            return await handler(request)
        principal = identify(request)
        request[PRINCIPAL] = principal
        if action is None:
            check_role(principal, needed)
            return await handler(request)
        draft = AuditDraft(action=action, principal=principal, target=request.match_info.get("version"))
        request[AUDIT_DRAFT] = draft
        audit = request.app[AUDIT]
        try:
            check_role(principal, needed)
            response = await handler(request)
        except DermaScanError as exc:
            await audit.record(draft.finish(exc.status, exc.code))
            raise
        except web.HTTPException as exc:
            await audit.record(draft.finish(exc.status, exc.reason.lower().replace(" ", "_")))
            raise
        except Exception:
            await audit.record(draft.finish(500, "internal_error"))
            raise
        await audit.record(draft.finish(response.status, "ok" if response.status < 400 else "error"))
        return response

    return guarded
