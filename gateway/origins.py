"""Browser requests: a `Host` allowlist, an `Origin` check on state-changing requests, CORS (off
by default), and the headers that keep the UI out of other sites' frames and scripts.

A request whose `Host` is not one of `DERMASCAN_ALLOWED_HOSTS` (the loopback names by default)
or `DERMASCAN_HTTP_HOST` is refused with 421: a page whose own name was re-pointed at this
gateway's address (DNS rebinding) is "same origin" with it in the browser's eyes, and only the
`Host` it sends gives it away. Probes and scrapers (`/livez`, `/readyz`, `/metrics`, and the
Open Inference Protocol's `/v2/health/live` and `/v2/health/ready`, which KServe probes by pod
address) answer any host: they reach pods by address or service name, and say nothing about patients.

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
from gateway.settings import GatewaySettings
from shared.errors import DermaScanError, Forbidden

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = (":80", ":443")
#: Paths that answer whatever `Host` a request names: liveness, readiness and Prometheus.
ANY_HOST_PATHS = frozenset({"/livez", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})
_WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]"})
#: What every answer carries: the UI loads nothing from elsewhere and runs no inline script
#: (gateway/static), images may be the page's own blob: and data: URLs (thumbnails fetched with
#: the token, the model's view of an image), and no other site may frame it.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class MisdirectedHost(DermaScanError):
    """A request for a host name this gateway does not answer to (421)."""

    status = 421
    default_code = "host_not_allowed"


def _hostport(netloc: str) -> str:
    netloc = netloc.lower()
    return next((netloc[: -len(p)] for p in _DEFAULT_PORTS if netloc.endswith(p)), netloc)


def host_name(host: str) -> str:
    """The name of a `Host` header, lower case, without its port or a final dot
    (`Example.ORG.:8080` -> `example.org`, `[::1]:80` -> `[::1]`)."""
    host = host.strip().lower()
    if host.startswith("["):
        name = host[: host.find("]") + 1] if "]" in host else host
    else:
        name, colon, port = host.rpartition(":")
        name = name if colon and port.isdigit() else host
    return name.rstrip(".")


def allowed_hosts(settings: GatewaySettings) -> frozenset[str]:
    """The host names this gateway answers to: `DERMASCAN_ALLOWED_HOSTS`, and
    `DERMASCAN_HTTP_HOST` when it is one address (not a wildcard)."""
    hosts = set(settings.allowed_hosts)
    if settings.http_host.strip() not in _WILDCARD_BINDS:
        hosts.add(host_name(settings.http_host))
    return frozenset(hosts)


def check_host(request: web.Request) -> None:
    """Raises MisdirectedHost when the request names a host this gateway does not answer to. A
    request without `Host` (HTTP/1.0 tools) passes: a browser always sends one."""
    host = request.headers.get(hdrs.HOST)
    if host is None or request.path in ANY_HOST_PATHS:
        return
    hosts = allowed_hosts(request.app[SETTINGS])
    if "*" not in hosts and host_name(host) not in hosts:
        raise MisdirectedHost(f"this gateway does not answer to the host {host[:100]!r} "
                              "(DERMASCAN_ALLOWED_HOSTS lists the names it answers to)")


def listed(request: web.Request, origin: str) -> bool:
    """True when `origin` is one of `DERMASCAN_ALLOWED_ORIGINS`."""
    return origin.lower().rstrip("/") in request.app[SETTINGS].allowed_origins


def same_origin(request: web.Request, origin: str) -> bool:
    """True when `origin` names the host and port this request was sent to (whose host the
    host check has already allowed)."""
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(request.host) and \
        _hostport(parts.netloc) == _hostport(request.host)


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Raises MisdirectedHost for a host not allowed, Forbidden for a state-changing request
    from a foreign origin (inside the error middleware, so the refusal is the usual JSON error)."""
    check_host(request)
    origin = request.headers.get(hdrs.ORIGIN)
    if request.method not in SAFE_METHODS and origin is not None \
            and not (same_origin(request, origin) or listed(request, origin)):
        raise Forbidden(f"requests from the origin {origin[:100]!r} may not change anything here "
                        "(DERMASCAN_ALLOWED_ORIGINS lists the origins that may)", code="foreign_origin")
    return await handler(request)


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answers preflights from listed origins and adds `Access-Control-Allow-Origin` for them
    (outside the error middleware, so errors are readable too); nothing for anyone else. Every
    answer gets `SECURITY_HEADERS`."""
    origin = request.headers.get(hdrs.ORIGIN)
    allowed = origin is not None and listed(request, origin)
    if allowed and request.method == "OPTIONS" and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers:
        return web.Response(status=204, headers={
            hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin or "",
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: "GET, POST",
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: "Authorization, Content-Type",
            hdrs.ACCESS_CONTROL_MAX_AGE: "600",
            hdrs.VARY: "Origin",
            **SECURITY_HEADERS,
        })
    response = await handler(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.app[SETTINGS].allowed_origins:
        response.headers.add(hdrs.VARY, "Origin")
    if allowed:
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin or ""
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = "Location, Retry-After, WWW-Authenticate"
    return response
