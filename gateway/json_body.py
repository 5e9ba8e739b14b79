"""The bodies of the JSON routes (`POST /retrain`, `POST /models/...`): JSON or nothing.

Refusing other content types (415) also means that a plain HTML form, which can only send
`text/plain`, `multipart/form-data` or `application/x-www-form-urlencoded`, cannot drive them.
A body is read within `DERMASCAN_BODY_TIMEOUT_S` and at most `MAX_JSON_BYTES`; a 422 names
each invalid field and why, never the input itself (which may be megabytes).
"""

from __future__ import annotations

from typing import TypeVar

from aiohttp import hdrs, web
from pydantic import BaseModel, ValidationError

from gateway.keys import SETTINGS
from gateway.limits import receiving
from shared.errors import PayloadTooLarge, Unprocessable, UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)
#: Largest JSON body: options are a few fields.
MAX_JSON_BYTES = 64 * 1024
#: Problems listed in one 422, and characters of each.
_SHOWN_ERRORS, _ERROR_CHARS = 5, 200


async def _read(request: web.Request, what: str) -> bytes:
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise PayloadTooLarge(f"{what} is {request.content_length:,} bytes; the limit is {MAX_JSON_BYTES:,}",
                              code="body_too_large")
    chunks, size = [], 0
    async with receiving(request.app[SETTINGS].body_timeout_s, what):
        while chunk := await request.content.read(16 * 1024):
            size += len(chunk)
            if size > MAX_JSON_BYTES:
                raise PayloadTooLarge(f"{what} is larger than {MAX_JSON_BYTES:,} bytes",
                                      code="body_too_large")
            chunks.append(chunk)
    return b"".join(chunks)


def describe(exc: ValidationError) -> str:
    """The problems of `exc` as `field: reason` (without the rejected input), a few at most."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False)[:_SHOWN_ERRORS]:
        where = ".".join(str(part) for part in error["loc"]) or "body"
        problems.append(f"{where}: {error['msg']}"[:_ERROR_CHARS])
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


async def read_json(request: web.Request, model: type[M], *, what: str) -> M:
    """The body validated as `model`; an empty body is `model()`, whatever Content-Type it
    claims (clients label empty bodies application/octet-stream). Raises UnsupportedMediaType
    when a body is not labelled application/json, PayloadTooLarge past MAX_JSON_BYTES,
    RequestTimeout when it is slow to arrive, Unprocessable when the JSON does not validate
    (`what` names the body in the message)."""
    raw = await _read(request, what)
    if not raw.strip():
        return model()
    if hdrs.CONTENT_TYPE not in request.headers or request.content_type != "application/json":
        got = request.content_type[:80] if hdrs.CONTENT_TYPE in request.headers else "no Content-Type"
        raise UnsupportedMediaType(f"{what} is JSON: send Content-Type: application/json (got {got})",
                                   code="json_required")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise Unprocessable(f"invalid {what}: {describe(exc)}", code="invalid_options") from None
