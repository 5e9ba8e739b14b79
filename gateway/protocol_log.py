"""What aiohttp's server logs about requests it could not parse (an oversized header line, a
malformed request line): one WARNING line each, not an ERROR with a traceback. They are the
client's doing, already answered 400 by aiohttp, and a client sending many must not fill the
log with tracebacks. Anything else aiohttp logs goes on as it was."""

from __future__ import annotations

import logging
import sys
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.log import server_logger


class ProtocolLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's `aiohttp.server` logger, with malformed requests logged as one warning line.
    Pass it as the request handler's `logger` (`web.Application(handler_args=...)`)."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        error = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(error, HttpProcessingError) and 400 <= (error.code or 0) < 500:
            detail = " ".join(str(error.message).split())[:200]  # one line, however long the input
            self.logger.warning("%s: %s %s: %s", str(msg) % args, error.code, type(error).__name__, detail)
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)


def protocol_log() -> ProtocolLog:
    """The logger to hand aiohttp's request handler."""
    return ProtocolLog(server_logger, {})
