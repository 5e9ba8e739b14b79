"""Who may call what: `guard(role, handler)` wraps a route so that it needs a Bearer token of
at least `role`, and, for the audited actions, records the outcome in the audit log.

`401` (with `WWW-Authenticate: Bearer`): no token, or one nobody issued. `403`: a known token
whose role is too low (audited). `POST /predict` needs the `predict` role only when
`DERMASCAN_OPEN_PREDICT` is false; open, it reads no token at all.

Two limits, both per gateway process: each token may call the routes of the `contribute` and
`operator` roles `DERMASCAN_TOKEN_CALLS_PER_MIN` times a minute (then 429, audited like any
refusal), so no token can flood the audit log or the queues; and each client address may send
`DERMASCAN_AUTH_FAILURES_PER_MIN` unknown or malformed tokens a minute, after which every token
it sends is refused (429) until the minute is over, so guessing tokens is slow. Each failure is
counted in `dermascan_gateway_auth_failures_total{reason}`.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from gateway.audit import AUDIT, AUDIT_DRAFT, Action, AuditDraft
from gateway.keys import METRICS, SETTINGS
from gateway.limits import RateLimited
from gateway.settings import GatewaySettings
from gateway.tokens import Principal, Role, TokenBook
from shared.errors import DermaScanError, Forbidden, Unauthorized

log = logging.getLogger(__name__)
TOKENS = web.AppKey("tokens", TokenBook)
PRINCIPAL = web.RequestKey("principal", Principal)
#: Keys one counter remembers at once (least recently counted out first).
MAX_KEYS = 10_000
#: What a token may hold: printable ASCII (RFC 6750's b64token is a subset of it).
_PRINTABLE = frozenset(range(0x21, 0x7F))


class MinuteCounter:
    """Events per key in fixed one-minute windows, for limits that must be read without being
    charged (an address over its failures is refused before its token is even looked at), which
    the token buckets of gateway/ratelimit.py do not offer. Loop-only; at most MAX_KEYS keys."""

    WINDOW_S = 60.0

    def __init__(self, limit: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.clock = limit, clock
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def _window(self, key: str) -> tuple[float, int]:
        now = self.clock()
        start, count = self._windows.get(key, (now, 0))
        return (now, 0) if now - start >= self.WINDOW_S else (start, count)

    def wait_s(self, key: str) -> float:
        """0 while `key` is under its limit; otherwise the seconds until its window ends."""
        if self.limit <= 0:
            return 0.0
        start, count = self._window(key)
        return 0.0 if count < self.limit else max(1.0, start + self.WINDOW_S - self.clock())

    def count(self, key: str) -> None:
        """Count one event for `key`."""
        if self.limit <= 0:
            return
        start, count = self._window(key)
        self._windows.pop(key, None)
        self._windows[key] = (start, count + 1)
        while len(self._windows) > MAX_KEYS:
            self._windows.popitem(last=False)


class AuthLimits:
    """The two limits of this module, from the settings. Loop-only."""

    def __init__(self, settings: GatewaySettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.calls = MinuteCounter(settings.token_calls_per_min, clock=clock)
        self.failures = MinuteCounter(settings.auth_failures_per_min, clock=clock)


AUTH_LIMITS = web.AppKey("auth_limits", AuthLimits)


def _failed(request: web.Request, reason: str) -> None:
    request.app[METRICS].auth_failures.labels(reason).inc()
    if reason != "missing_token":
        request.app[AUTH_LIMITS].failures.count(request.remote or "unknown")


def bearer_token(request: web.Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None without one; raises
    Unauthorized for another scheme or a token that is not printable ASCII."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send the token as 'Authorization: Bearer <token>'", code="invalid_token")
    if not all(ord(c) in _PRINTABLE for c in token):
        raise Unauthorized("a token is printable ASCII, and this one is not", code="invalid_token")
    return token


def identify(request: web.Request) -> Principal:
    """The caller; raises Unauthorized when it sent no token or an unknown one, RateLimited when
    its address sent too many unknown tokens this minute."""
    address = request.remote or "unknown"
    wait = request.app[AUTH_LIMITS].failures.wait_s(address)
    if wait:
        request.app[METRICS].auth_failures.labels("address_limited").inc()
        raise RateLimited(f"too many unknown tokens from this address; the limit is "
                          f"{request.app[SETTINGS].auth_failures_per_min} a minute", retry_after_s=wait,
                          code="too_many_auth_failures")
    try:
        token = bearer_token(request)
    except Unauthorized:
        _failed(request, "malformed_token")
        raise
    if token is None:
        _failed(request, "missing_token")
        raise Unauthorized("this needs an API token: send 'Authorization: Bearer <token>'",
                           code="missing_token")
    principal = request.app[TOKENS].identify(token)
    if principal is None:
        _failed(request, "unknown_token")
        log.warning("unknown token on %s %s from %s", request.method, request.path[:200], address)
        raise Unauthorized("the token is not known to this gateway", code="invalid_token")
    return principal


def check_role(principal: Principal, needed: Role) -> None:
    """Raises Forbidden unless `principal` has `needed` or a higher role."""
    if principal.role < needed:
        raise Forbidden(f"the token {principal.name!r} has the {principal.role.label} role; "
                        f"this needs the {needed.label} role", code="insufficient_role")


def check_rate(request: web.Request, principal: Principal, needed: Role) -> None:
    """Count a call of a `contribute` or `operator` route against the token; raises RateLimited
    past `DERMASCAN_TOKEN_CALLS_PER_MIN` (a refused call counts too: a flood of them is what
    this stops)."""
    if needed < Role.CONTRIBUTE:
        return
    calls = request.app[AUTH_LIMITS].calls
    wait = calls.wait_s(principal.name)
    if wait:
        raise RateLimited(f"too many calls from the token {principal.name!r}; the limit is {calls.limit} a "
                          "minute", retry_after_s=wait, code="too_many_calls")
    calls.count(principal.name)


def guard(needed: Role, handler: Handler, *, action: Action | None = None) -> Handler:
    """`handler` behind a token of at least `needed`. With `action`, every answer to a known
    token (refusals for a low role or a rate included) is recorded in the audit log, repeated
    refusals as one event with their count (gateway/audit.py); the handler adds what it learns
    through `request[AUDIT_DRAFT]`."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        if needed is Role.PREDICT and request.app[SETTINGS].open_predict:
            return await handler(request)
        principal = identify(request)
        request[PRINCIPAL] = principal
        if action is None:
            check_rate(request, principal, needed)
            check_role(principal, needed)
            return await handler(request)
        draft = AuditDraft(action=action, principal=principal, target=request.match_info.get("version"))
        request[AUDIT_DRAFT] = draft
        audit = request.app[AUDIT]
        try:
            check_rate(request, principal, needed)
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
