"""The one place where failures become HTTP answers: `{"error": {"code", "message"}}`."""

from __future__ import annotations

import logging

from aiohttp import web

from shared.errors import DermaScanError, Overloaded, ServiceUnavailable, Unauthorized

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, *, retry_after: int | None = None) -> web.Response:
    response = web.json_response({"error": {"code": code, "message": message}}, status=status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    """Map DermaScanError, aiohttp's HTTP errors and anything unexpected to JSON errors; a 401
    carries `WWW-Authenticate: Bearer`."""
    try:
        return await handler(request)
    except DermaScanError as exc:
        retry = 1 if isinstance(exc, Overloaded | ServiceUnavailable) else None
        response = error_response(exc.status, exc.code, exc.message, retry_after=retry)
        if isinstance(exc, Unauthorized):  # RFC 6750: say which scheme, and why it failed
            error = "invalid_token" if exc.code == "invalid_token" else "invalid_request"
            response.headers["WWW-Authenticate"] = f'Bearer realm="dermascan", error="{error}"'
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        return error_response(exc.status, code, exc.text or exc.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "an unexpected error occurred; it was logged")
