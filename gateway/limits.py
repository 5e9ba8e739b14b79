"""Limits at the edge: how long a client may take, which bodies are read at all, and how many
request bytes one gateway holds at once.

- **Headers:** `DERMASCAN_HEADER_TIMEOUT_S` is aiohttp's keep-alive timeout, which also runs
  from the moment a connection opens: a connection that has not sent a whole request head by
  then (a slow-header client) is closed, as is one idle that long between requests.
- **Bodies:** each route reads its body under a deadline (`receiving`): `/predict` and the
  JSON routes within `DERMASCAN_BODY_TIMEOUT_S`, bulk uploads within
  `DERMASCAN_UPLOAD_TIMEOUT_S`; late is `408 body_timeout` and the connection is closed.
  `/predict` and bulk uploads must also keep a pace: at least
  `DERMASCAN_MIN_RECEIVE_RATE_BYTES_PER_S` in every `DERMASCAN_RECEIVE_RATE_WINDOW_S`, else
  `408 body_too_slow`, so a stalled client lets go within one window, not at the deadline.
- **Compression:** a request body with a `Content-Encoding` other than `identity` is refused
  (`415 unsupported_content_encoding`), and aiohttp's automatic decompression is off, so no
  body is ever inflated here (a 1 MB gzip body can inflate to 1 GiB).
- **Bytes in flight:** `/predict` and bulk uploads charge the file bytes they have actually
  received (never what a request declares) to one budget,
  `DERMASCAN_MAX_UPLOAD_BYTES_IN_FLIGHT`, of which one caller (token, or address without one)
  holds at most `DERMASCAN_MAX_UPLOAD_BYTES_IN_FLIGHT_PER_CALLER`; past either:
  `429 upload_bytes_in_flight` / `upload_bytes_per_caller`. A connection that sends nothing
  holds nothing, and one address cannot take the budget from the rest.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any

from aiohttp import StreamReader, hdrs, web
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


class Pace:
    """The deadline of one request body: `seconds` in all, and, with a `min_rate` and the
    `body`, at least `min_rate * window` bytes delivered by the connection (counted as they
    arrive, before any parsing) in each `window` seconds until the body is all in; a window
    short of that ends the block at once. Moves the enclosing `asyncio.Timeout`. Loop-only."""

    def __init__(self, timeout: asyncio.Timeout, seconds: float, min_rate: float, window: float,
                 body: StreamReader | None) -> None:
        self._timeout, self._body = timeout, body
        self._loop = asyncio.get_running_loop()
        self.min_rate, self.window = min_rate, window
        self.too_slow = False
        self._mark = 0
        self._check: asyncio.TimerHandle | None = None
        timeout.reschedule(self._loop.time() + seconds)
        self._start_window()

    def _start_window(self) -> None:
        if self.min_rate <= 0 or self._body is None:
            return
        self._mark = self._body.total_bytes
        self._check = self._loop.call_later(self.window, self._end_window)

    def _end_window(self) -> None:
        self._check = None
        assert self._body is not None
        if self._body.is_eof() or self._body.total_bytes - self._mark >= self.min_rate * self.window:
            self._start_window()
        else:
            self.too_slow = True
            self._timeout.reschedule(self._loop.time())  # ends the block now

    def stop(self) -> None:
        """No more windows (the body is in, or the block is over)."""
        if self._check is not None:
            self._check.cancel()
            self._check = None

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No minimum rate inside the block (the gateway, not the client, is busy: a store
        write); a new window starts after it. The overall deadline still runs."""
        self.stop()
        try:
            yield
        finally:
            self._start_window()


def paced(settings: GatewaySettings, request: web.Request, seconds: float,
          what: str) -> AbstractAsyncContextManager[Pace]:
    """`receiving` `request`'s body with the minimum pace of `settings` (the upload routes)."""
    return receiving(seconds, what, min_rate=settings.min_receive_rate_bytes_per_s,
                     window=settings.receive_rate_window_s, body=request.content)


@asynccontextmanager
async def receiving(seconds: float, what: str, *, min_rate: float = 0.0, window: float = 10.0,
                    body: StreamReader | None = None) -> AsyncIterator[Pace]:
    """Run the block (which reads the request `body`) within `seconds`, and, with a `min_rate`
    (bytes a second) and the `body`, at the pace `Pace` describes. Raises RequestTimeout naming
    `what` when the body is late (`body_timeout`) or too slow (`body_too_slow`). Loop-only."""
    deadline = asyncio.timeout(None)
    pace: Pace | None = None
    try:
        async with deadline:
            pace = Pace(deadline, seconds, min_rate, window, body)
            try:
                yield pace
            finally:
                pace.stop()
    except TimeoutError:
        if not deadline.expired() or pace is None:  # another timeout inside the block (the store's, say)
            raise
        if pace.too_slow:
            raise RequestTimeout(f"{what} arrived slower than {min_rate:,.0f} bytes a second over "
                                 f"{window:g} s; send it on a faster connection",
                                 code="body_too_slow") from None
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
    """Request bytes one gateway holds at once: at most `limit` in all, and at most a share
    per caller (`hold`). Bytes are charged as they arrive, never as declared. Loop-only."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.by_caller: dict[str, int] = {}

    @contextmanager
    def hold(self, caller: str, share: int) -> Iterator[Holding]:
        """A Holding of `caller` (at most `share` bytes for all its requests together) for
        the block; whatever it still holds is given back at the end."""
        holding = Holding(self, caller, share)
        try:
            yield holding
        finally:
            holding.give_back(holding.held)


class Holding:
    """What one request holds of a ByteBudget. Loop-only."""

    def __init__(self, budget: ByteBudget, caller: str, share: int) -> None:
        self.budget, self.caller, self.share = budget, caller, share
        self.held = 0

    def take(self, size: int) -> None:
        """Charge `size` bytes that arrived; raises Overloaded (`upload_bytes_per_caller`,
        `upload_bytes_in_flight`) when the caller's share or the budget is spent."""
        budget = self.budget
        mine = budget.by_caller.get(self.caller, 0)
        if mine + size > self.share:
            raise Overloaded(f"this caller is already sending {mine:,} bytes of uploads to this gateway "
                             f"(at most {self.share:,} at once); retry shortly",
                             code="upload_bytes_per_caller")
        if budget.used + size > budget.limit:
            raise Overloaded(f"this gateway is receiving {budget.used:,} bytes of uploads; retry shortly",
                             code="upload_bytes_in_flight")
        budget.used += size
        budget.by_caller[self.caller] = mine + size
        self.held += size

    def give_back(self, size: int) -> None:
        """Return `size` held bytes (a file that was staged and dropped)."""
        size = min(size, self.held)
        budget = self.budget
        self.held -= size
        budget.used -= size
        left = budget.by_caller.get(self.caller, 0) - size
        if left > 0:
            budget.by_caller[self.caller] = left
        else:
            budget.by_caller.pop(self.caller, None)


UPLOAD_BYTES = web.AppKey("upload_bytes", ByteBudget)
