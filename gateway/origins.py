"""Browser requests: an `Origin` check on state-changing requests, and CORS (off by default).

A request that carries an `Origin` header (browsers add it) and uses a method other than GET,
HEAD or OPTIONS is refused with 403 unless the origin is the gateway's own (the same host and
port as the request's `Host`; the scheme is not compared, since TLS often ends at a proxy) or
is listed in `DERMASCAN_ALLOWED_ORIGINS`. Requests without `Origin` (curl, scripts) pass.
CORS headers are sent only to the listed origins, so with none listed no other site's page can
read an answer.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from gateway.keys import SETTINGS
from shared.errors import Forbidden

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = (":80", ":443")


def _hostport(netloc: str) -> str:
    netloc = netloc.lower()
    return next((netloc[: -len(p)] for p in _DEFAULT_PORTS if netloc.endswith(p)), netloc)


def listed(request: web.Request, origin: str) -> bool:
    """True when `origin` is one of `DERMASCAN_ALLOWED_ORIGINS`."""
    return origin.lower().rstrip("/") in request.app[SETTINGS].allowed_origins


def same_origin(request: web.Request, origin: str) -> bool:
    """True when `origin` names the host and port this request was sent to."""
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(request.host) and \
        _hostport(parts.netloc) == _hostport(request.host)


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Raises Forbidden for a state-changing request from a foreign origin (inside the error
    middleware, so the refusal is the usual JSON error)."""
    origin = request.headers.get(hdrs.ORIGIN)
    if request.method not in SAFE_METHODS and origin is not None \
            and not (same_origin(request, origin) or listed(request, origin)):
        raise Forbidden(f"requests from the origin {origin[:100]!r} may not change anything here "
                        "(DERMASCAN_ALLOWED_ORIGINS lists the origins that may)", code="foreign_origin")
    return await handler(request)


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answers preflights from listed origins and adds `Access-Control-Allow-Origin` for them
    (outside the error middleware, so errors are readable too); nothing for anyone else."""
    origin = request.headers.get(hdrs.ORIGIN)
    allowed = origin is not None and listed(request, origin)
    if allowed and request.method == "OPTIONS" and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers:
        return web.Response(status=204, headers={
            hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin or "",
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: "GET, POST",
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: "Authorization, Content-Type",
            hdrs.ACCESS_CONTROL_MAX_AGE: "600",
            hdrs.VARY: "Origin",
        })
    response = await handler(request)
    if request.app[SETTINGS].allowed_origins:
        response.headers.add(hdrs.VARY, "Origin")
    if allowed:
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin or ""
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = "Location, Retry-After, WWW-Authenticate"
    return response
