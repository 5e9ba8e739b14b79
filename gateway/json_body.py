"""The bodies of the JSON routes (`POST /retrain`, `POST /models/...`): JSON or nothing.

Refusing other content types (415) also means that a plain HTML form, which can only send
`text/plain`, `multipart/form-data` or `application/x-www-form-urlencoded`, cannot drive them.
A body is read within `DERMASCAN_BODY_TIMEOUT_S` and at most `MAX_JSON_BYTES`; a 422 names
each invalid field and why, never the input itself (which may be megabytes).

Types are JSON's, as the OpenAPI document declares them (pydantic's strict mode): `"promote": 0`
is not a boolean and `"epochs": "30"` is not an integer, each a 422 naming the field. An
integer is what JSON Schema calls one, any number with no fractional part, so `"epochs": 30.0`
is 30 (Python's `json.dumps` writes a float so) while `30.5` is refused; a number is finite
(`1e400` is refused), and an integer field takes no `true`.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

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


def _number(text: str) -> int | float:
    """A JSON number written with a fraction or an exponent: an int when it is integral (JSON
    Schema's integer), else a finite float; raises ValueError for one out of range."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return int(value) if value.is_integer() else value


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # json.loads would read NaN and Infinity


def parse(raw: bytes) -> Any:
    """The JSON document `raw`, numbers read as `_number` says; raises ValueError with the
    reason (where the JSON breaks, a number out of range or too long, nesting too deep)."""
    try:
        return json.loads(raw, parse_float=_number, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError:
        raise ValueError("not JSON: the body is not UTF-8 text") from None
    except RecursionError:
        raise ValueError("not JSON this gateway reads: nested too deeply") from None
    except ValueError as exc:
        if "digits" not in str(exc):  # ours, from _number or _constant
            raise
        raise ValueError("not JSON this gateway reads: an integer of thousands of digits") from None


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
    RequestTimeout when it is slow to arrive, Unprocessable when it is not JSON or does not
    validate strictly (see the module; `what` names the body in the message)."""
    raw = await _read(request, what)
    if not raw.strip():
        return model()
    if hdrs.CONTENT_TYPE not in request.headers or request.content_type != "application/json":
        got = request.content_type[:80] if hdrs.CONTENT_TYPE in request.headers else "no Content-Type"
        raise UnsupportedMediaType(f"{what} is JSON: send Content-Type: application/json (got {got})",
                                   code="json_required")
    try:
        document = parse(raw)
    except ValueError as exc:
        raise Unprocessable(f"invalid {what}: {exc}", code="invalid_options") from None
    try:
        return model.model_validate(document, strict=True)
    except ValidationError as exc:
        raise Unprocessable(f"invalid {what}: {describe(exc)}", code="invalid_options") from None
