"""One exception family for the whole system; each error knows its HTTP status and wire code.

Errors travel between services as `ErrorInfo` data (see `shared.messages`) and are turned back
into these exceptions by `raise_for_error`, so the gateway maps every failure to JSON in one place.
"""

from __future__ import annotations

from typing import ClassVar


class DermaScanError(Exception):
    """Base of every expected failure. `code` is the stable wire name, `status` the HTTP status."""

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class BadRequest(DermaScanError):
    """The request is malformed: not an image, a corrupt image, a bad form."""

    status = 400
    default_code = "bad_request"


class Unauthorized(DermaScanError):
    """No credentials, or credentials nobody issued: the caller must say who it is (401).
    The gateway adds `WWW-Authenticate: Bearer` to the answer."""

    status = 401
    default_code = "unauthorized"


class Forbidden(DermaScanError):
    """The caller is known but may not do this (403): a role too low, or a foreign origin."""

    status = 403
    default_code = "forbidden"


class NotFound(DermaScanError):
    status = 404
    default_code = "not_found"


class Conflict(DermaScanError):
    status = 409
    default_code = "conflict"


class PayloadTooLarge(DermaScanError):
    status = 413
    default_code = "payload_too_large"


class UnsupportedMediaType(DermaScanError):
    status = 415
    default_code = "unsupported_media_type"


class Unprocessable(DermaScanError):
    """A required field is missing or a value is out of range."""

    status = 422
    default_code = "unprocessable"


class Overloaded(DermaScanError):
    """Too much in flight: the caller should retry after a short wait."""

    status = 429
    default_code = "overloaded"
    retryable = True


class ServiceUnavailable(DermaScanError):
    """A dependency (broker, store, workers) cannot be reached right now."""

    status = 503
    default_code = "unavailable"
    retryable = True


class DeadlineExceeded(DermaScanError):
    status = 504
    default_code = "deadline_exceeded"
    retryable = True


_BY_STATUS: dict[int, type[DermaScanError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        Unprocessable,
        Overloaded,
        ServiceUnavailable,
        DeadlineExceeded,
    )
}


def error_for_status(status: int, message: str, code: str) -> DermaScanError:
    """Rebuild the exception a remote service reported (unknown statuses become 500s)."""
    return _BY_STATUS.get(status, DermaScanError)(message, code=code)
