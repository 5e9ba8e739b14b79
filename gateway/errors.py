"""The one place where failures become HTTP answers: `{"error": {"code", "message", "retryable"}}`,
or, on the Open Inference Protocol's routes (`/v2/...`, gateway/v2.py), that protocol's
`{"error": "<message>"}` with the same status and headers.

A 500 says only "internal error" and a request id; the exception, with that id, goes to the
log. Nothing an exception says reaches the client unless our own code wrote it as a
DermaScanError's message.
"""

from __future__ import annotations

import logging
import uuid

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict, Field

from gateway.limits import RateLimited, RequestTimeout
from shared.errors import DermaScanError, Overloaded, ServiceUnavailable, Unauthorized

log = logging.getLogger(__name__)
#: Statuses a client may retry after a short wait (`retryable` in the body).
_RETRYABLE = frozenset({408, 429, 502, 503, 504})


class ErrorDetail(BaseModel):
    """What went wrong, as data."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="Stable machine-readable name, e.g. 'not_an_image' or 'rate_limited'.")
    message: str = Field(description="Human-readable reason.")
    retryable: bool = Field(False, description="Whether the same request may succeed later (then honour "
                                               "Retry-After when present).")


class ErrorBody(BaseModel):
    """The body of every error answer."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


class ProtocolError(BaseModel):
    """The body of an error answer on the Open Inference Protocol's routes (`/v2/...`)."""

    model_config = ConfigDict(extra="forbid")

    error: str = Field(description="Human-readable reason.")


def speaks_protocol(request: web.Request) -> bool:
    """Whether `request` is for the Open Inference Protocol's routes, which answer errors in its shape."""
    return request.path == "/v2" or request.path.startswith("/v2/")


def error_response(status: int, code: str, message: str, *, retryable: bool | None = None,
                   retry_after: int | None = None, protocol: bool = False) -> web.Response:
    """A JSON error answer (`protocol`: the Open Inference Protocol's shape, which has only the
    message); `retryable` defaults to what the status implies."""
    if protocol:
        response = web.json_response(ProtocolError(error=message).model_dump(), status=status)
    else:
        detail = ErrorDetail(code=code, message=message,
                             retryable=status in _RETRYABLE if retryable is None else retryable)
        response = web.json_response(ErrorBody(error=detail).model_dump(), status=status)
    if retry_after is not None:
        response.headers[hdrs.RETRY_AFTER] = str(retry_after)
    return response


def _internal(request: web.Request, what: str) -> web.Response:
    request_id = uuid.uuid4().hex[:16]
    log.exception("internal error %s on %s %s (%s)", request_id, request.method, request.path[:200], what)
    response = error_response(500, "internal_error", f"internal error (request id {request_id})",
                              protocol=speaks_protocol(request))
    response.headers["X-Request-Id"] = request_id
    return response


def _known(exc: DermaScanError, protocol: bool) -> web.Response:
    retry = exc.retry_after if isinstance(exc, RateLimited) else \
        1 if isinstance(exc, Overloaded | ServiceUnavailable) else None
    response = error_response(exc.status, exc.code, exc.message, retryable=exc.retryable or None,
                              retry_after=retry, protocol=protocol)
    if isinstance(exc, Unauthorized):  # RFC 6750: say which scheme, and why it failed
        error = "invalid_token" if exc.code == "invalid_token" else "invalid_request"
        response.headers[hdrs.WWW_AUTHENTICATE] = f'Bearer realm="dermascan", error="{error}"'
    if isinstance(exc, RequestTimeout):  # the rest of the body is not worth waiting for
        response.force_close()
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map DermaScanError, aiohttp's HTTP errors and anything unexpected to JSON errors; a 401
    carries `WWW-Authenticate: Bearer`, a 429 or 503 `Retry-After`, a 405 `Allow`."""
    try:
        return await handler(request)
    except DermaScanError as exc:
        if exc.status == 500:  # a remote service's failure: its text may be an exception's
            return _internal(request, f"{exc.code}: {exc.message[:500]}")
        if isinstance(exc, ServiceUnavailable):  # the bus's and store's messages may quote exceptions
            log.warning("%s %s: %s %s", request.method, request.path[:200], exc.code, exc.message[:500])
            exc = ServiceUnavailable("a service this request needs is unavailable right now; retry shortly",
                                     code=exc.code)
        return _known(exc, speaks_protocol(request))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status >= 500:
            return _internal(request, exc.reason)
        code = exc.reason.lower().replace(" ", "_")
        response = error_response(exc.status, code, (exc.text or exc.reason)[:300],
                                  protocol=speaks_protocol(request))
        if hdrs.ALLOW in exc.headers:
            response.headers[hdrs.ALLOW] = exc.headers[hdrs.ALLOW]
        return response
    except Exception:  # noqa: BLE001 - the one catch-all: logged with its traceback, answered as a 500
        return _internal(request, "unhandled exception")
