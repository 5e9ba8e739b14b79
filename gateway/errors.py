"""The one place where failures become HTTP answers: `{"error": {"code", "message"}}`."""

from __future__ import annotations

import logging

from aiohttp import web

from shared.errors import DermaScanError, Overloaded, ServiceUnavailable

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, *, retry_after: int | None = None) -> web.Response:
    response = web.json_response({"error": {"code": code, "message": message}}, status=status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    """Map DermaScanError, aiohttp's HTTP errors and anything unexpected to JSON errors."""
    try:
        return await handler(request)
    except DermaScanError as exc:
        retry = 1 if isinstance(exc, Overloaded | ServiceUnavailable) else None
        return error_response(exc.status, exc.code, exc.message, retry_after=retry)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        return error_response(exc.status, code, exc.text or exc.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "an unexpected error occurred; it was logged")
