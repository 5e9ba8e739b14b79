"""The bodies of the JSON routes (`POST /retrain`, `POST /models/...`): JSON or nothing.

Refusing other content types (415) also means that a plain HTML form, which can only send
`text/plain`, `multipart/form-data` or `application/x-www-form-urlencoded`, cannot drive them.
"""

from __future__ import annotations

from typing import TypeVar

from aiohttp import hdrs, web
from pydantic import BaseModel, ValidationError

from shared.errors import Unprocessable, UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)


async def read_json(request: web.Request, model: type[M], *, what: str) -> M:
    """The body validated as `model`; an empty body is `model()`, whatever Content-Type it
    claims (clients label empty bodies application/octet-stream). Raises UnsupportedMediaType
    when a body is not labelled application/json, Unprocessable when the JSON does not
    validate (`what` names the body in the message)."""
    raw = await request.read()
    if not raw.strip():
        return model()
    if hdrs.CONTENT_TYPE not in request.headers or request.content_type != "application/json":
        got = request.content_type[:80] if hdrs.CONTENT_TYPE in request.headers else "no Content-Type"
        raise UnsupportedMediaType(f"{what} is JSON: send Content-Type: application/json (got {got})",
                                   code="json_required")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise Unprocessable(f"invalid {what}: {exc.errors(include_url=False)}",
                            code="invalid_options") from None
