"""Object-store calls retried through short outages (S3 restarting, a network blip, SlowDown).

The bus has no delayed requeue, so the backoff lives here: each call is retried with bounded
exponential backoff while its failure is transient, for at most `RetryPolicy.budget_s`; then it
raises `shared.store.StoreUnavailable` (retryable), and the service decides whether the job gets
another attempt. Failures that another try cannot fix (NotFound, a bad key) are raised at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from shared.errors import DermaScanError
from shared.store import ObjectStore, StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
#: S3 error codes that mean "try again" even when the status is not a 5xx.
_TRANSIENT_CODES = frozenset({"SlowDown", "RequestTimeout", "Throttling", "ThrottlingException",
                              "RequestLimitExceeded", "InternalError", "ServiceUnavailable"})


def is_transient(exc: BaseException) -> bool:
    """True for failures a later try may not see: connection errors and timeouts, S3 5xx and
    throttling, and DermaScan errors marked retryable."""
    if isinstance(exc, DermaScanError):
        return exc.retryable
    if isinstance(exc, ConnectionError | TimeoutError | BotoConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return status >= 500 or exc.response.get("Error", {}).get("Code") in _TRANSIENT_CODES
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """Waits first_s, 2 x first_s, ... (at most max_wait_s each) while under budget_s in all."""

    budget_s: float
    first_s: float
    max_wait_s: float


class RetryingStore:
    """An `ObjectStore` whose every call is retried per `policy`; `on_retry(operation)` is called
    before each wait (for a metric). Loop-only, like the store it wraps."""

    def __init__(self, store: ObjectStore, policy: RetryPolicy,
                 on_retry: Callable[[str], None] | None = None) -> None:
        self.inner, self.policy, self._on_retry = store, policy, on_retry
        self.url = store.url

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.budget_s
        wait = self.policy.first_s
        while True:
            try:
                return await call()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if loop.time() + wait > deadline:
                    raise StoreUnavailable(f"the object store failed for {self.policy.budget_s:g} s "
                                           f"({operation}): {exc}") from exc
                log.warning("store %s failed (%s); retrying in %.2f s", operation, exc, wait)
                if self._on_retry is not None:
                    self._on_retry(operation)
                await asyncio.sleep(wait)
                wait = min(wait * 2, self.policy.max_wait_s)

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        await self._call("put", lambda: self.inner.put(key, data, content_type=content_type))

    async def create(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        """The inner store's conditional create, retried like the rest (AlreadyExists is final)."""
        await self._call("create", lambda: self.inner.create(key, data, content_type=content_type))

    async def put_if(self, key: str, data: bytes, *, version: str | None,
                     content_type: str = "application/octet-stream") -> str:
        """The inner store's conditional put, retried like the rest (VersionMismatch is final)."""
        return await self._call("put_if", lambda: self.inner.put_if(key, data, version=version,
                                                                    content_type=content_type))

    async def get(self, key: str) -> bytes:
        return await self._call("get", lambda: self.inner.get(key))

    async def get_versioned(self, key: str) -> tuple[bytes, str]:
        return await self._call("get", lambda: self.inner.get_versioned(key))

    async def exists(self, key: str) -> bool:
        return await self._call("exists", lambda: self.inner.exists(key))

    async def list(self, prefix: str = "") -> list[str]:
        return await self._call("list", lambda: self.inner.list(prefix))

    async def list_stamped(self, prefix: str = "") -> dict[str, str]:
        return await self._call("list", lambda: self.inner.list_stamped(prefix))

    async def delete(self, key: str) -> None:
        await self._call("delete", lambda: self.inner.delete(key))

    async def ping(self) -> bool:
        return await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()
