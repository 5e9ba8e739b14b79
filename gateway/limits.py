"""Limits at the edge: how long a client may take, which bodies are read at all, and how many
request bytes one gateway holds at once.

- **Headers:** `DERMASCAN_HEADER_TIMEOUT_S` is aiohttp's keep-alive timeout, which also runs
  from the moment a connection opens: a connection that has not sent a whole request head by
  then (a slow-header client) is closed, as is one idle that long between requests.
- **Bodies:** each route reads its body under a deadline (`receiving`): `/predict` and the
  JSON routes within `DERMASCAN_BODY_TIMEOUT_S`, bulk uploads within
  `DERMASCAN_UPLOAD_TIMEOUT_S`; late is `408 body_timeout` and the connection is closed.
- **Compression:** a request body with a `Content-Encoding` other than `identity` is refused
  (`415 unsupported_content_encoding`), and aiohttp's automatic decompression is off, so no
  body is ever inflated here (a 1 MB gzip body can inflate to 1 GiB).
- **Bytes in flight:** `/predict` and bulk uploads reserve their declared size (at most their
  per-file limit) from one budget, `DERMASCAN_MAX_UPLOAD_BYTES_IN_FLIGHT`, before reading;
  past it: `429 upload_bytes_in_flight`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from gateway.settings import GatewaySettings
from shared.errors import DermaScanError, Overloaded, UnsupportedMediaType

#: Request methods whose body this gateway may read.
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class RequestTimeout(DermaScanError):
    """The client did not send its request body in time (408); the connection is closed."""

    status = 408
    default_code = "body_timeout"


class RateLimited(Overloaded):
    """A caller went past its rate or quota (429); `retry_after_s` says when it may retry."""

    default_code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s

    @property
    def retry_after(self) -> int:
        """Whole seconds for the `Retry-After` header (at least 1)."""
        return max(1, math.ceil(self.retry_after_s))


def server_options(settings: GatewaySettings) -> dict[str, Any]:
    """Arguments of aiohttp's request handler (`web.Application(handler_args=...)`): the
    header/idle timeout, and no automatic decompression of request bodies."""
    return {"keepalive_timeout": settings.header_timeout_s, "auto_decompress": False}


@asynccontextmanager
async def receiving(seconds: float, what: str) -> AsyncIterator[None]:
    """Run the block (which reads a request body) within `seconds`; raises RequestTimeout
    naming `what` when it takes longer. Loop-only."""
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            yield
    except TimeoutError:
        if not deadline.expired():  # another timeout inside the block (the store's, say)
            raise
        raise RequestTimeout(f"{what} did not arrive within {seconds:g} s; send it faster or in "
                             "smaller parts", code="body_timeout") from None


@web.middleware
async def encoding_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Raises UnsupportedMediaType for a request body sent compressed (inside the error
    middleware, so the refusal is the usual JSON error)."""
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
    if request.method in _WITH_BODY and encoding not in ("", "identity"):
        raise UnsupportedMediaType(
            f"request bodies are accepted uncompressed only (got Content-Encoding: {encoding[:40]}); "
            "send the file as it is", code="unsupported_content_encoding")
    return await handler(request)


class ByteBudget:
    """Request bytes one gateway holds at once; `reserve` refuses past `limit`. Loop-only."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @contextmanager
    def reserve(self, size: int) -> Iterator[None]:
        """Hold `size` bytes of the budget for the block; raises Overloaded when they do not fit."""
        if self.used + size > self.limit:
            raise Overloaded(f"this gateway is receiving {self.used:,} bytes of uploads; retry shortly",
                             code="upload_bytes_in_flight")
        self.used += size
        try:
            yield
        finally:
            self.used -= size


UPLOAD_BYTES = web.AppKey("upload_bytes", ByteBudget)
