"""Per-caller rate limits and upload quotas: token buckets kept in this gateway process.

A caller is the name of its API token, or, for a request without one (open `/predict`), its
client address (`request.remote`: behind a proxy that is the proxy's, so put the limit there or
close predictions). Each gateway replica limits on its own: with N replicas behind a balancer a
caller may get up to N times the rate. Buckets live in a bounded table (`MAX_CALLERS`, least
recently used out first); an evicted caller starts again with a full bucket.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.auth import PRINCIPAL
from gateway.limits import RateLimited
from gateway.settings import GatewaySettings
from shared.errors import PayloadTooLarge

#: Callers one table remembers at once.
MAX_CALLERS = 10_000


def caller(request: web.Request) -> str:
    """Whom a request is counted against: `token:<name>` or `ip:<address>`."""
    principal = request.get(PRINCIPAL)
    if principal is not None:
        return f"token:{principal.name}"
    return f"ip:{request.remote or 'unknown'}"


@dataclass
class _Bucket:
    level: float
    at: float


class Buckets:
    """One token bucket per caller: `capacity` at most, refilled at `rate` a second. A rate of
    0 means no limit. Loop-only (not thread-safe)."""

    def __init__(self, rate: float, capacity: float, *, clock: Callable[[], float] = time.monotonic,
                 max_callers: int = MAX_CALLERS) -> None:
        self.rate, self.capacity, self.clock, self.max_callers = rate, capacity, clock, max_callers
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str, amount: float = 1.0) -> float:
        """Take `amount` from `key`'s bucket and return 0, or take nothing and return the
        seconds until it could be taken (`math.inf` when `amount` exceeds the capacity)."""
        return self._ask(key, amount, take=True)

    def wait(self, key: str, amount: float) -> float:
        """The seconds until `amount` could be taken from `key`'s bucket (0: now; `math.inf`
        when it exceeds the capacity), taking nothing."""
        return self._ask(key, amount, take=False)

    def _ask(self, key: str, amount: float, *, take: bool) -> float:
        if self.rate <= 0:
            return 0.0
        if amount > self.capacity:
            return math.inf
        now = self.clock()
        bucket = self._buckets.pop(key, None) or _Bucket(self.capacity, now)
        bucket.level = min(self.capacity, bucket.level + (now - bucket.at) * self.rate)
        bucket.at = now
        self._buckets[key] = bucket
        while len(self._buckets) > self.max_callers:
            self._buckets.popitem(last=False)
        if bucket.level >= amount:
            if take:
                bucket.level -= amount
            return 0.0
        return (amount - bucket.level) / self.rate


class RateLimits:
    """The gateway's limits, from its settings: predictions per caller and bulk-upload bytes
    per token (charged as they arrive, so an abandoned request costs only what it sent)."""

    def __init__(self, settings: GatewaySettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.predictions = Buckets(settings.predict_rate_per_s, settings.predict_burst, clock=clock)
        self.upload_bytes = Buckets(settings.upload_bytes_per_hour / 3600, settings.upload_bytes_per_hour,
                                    clock=clock)

    def predict(self, request: web.Request) -> None:
        """Count one prediction; raises RateLimited past the caller's rate."""
        wait = self.predictions.take(caller(request))
        if wait:
            raise RateLimited(f"too many predictions from {_whom(request)}; the limit is "
                              f"{self.predictions.rate:g} a second (bursts of {self.predictions.capacity:g})",
                              retry_after_s=wait)

    def check_upload(self, request: web.Request, declared: int | None) -> None:
        """Before a bulk upload is read, charging nothing (a declared size is not bytes
        received): raises PayloadTooLarge when `declared` alone exceeds the hourly quota,
        RateLimited when the caller has less than `declared` (or nothing) left of it."""
        self._refuse(request, declared or 1, self.upload_bytes.wait(caller(request), declared or 1))

    def upload(self, request: web.Request, size: int) -> None:
        """Charge `size` bulk-upload bytes received; raises RateLimited past the caller's
        hourly quota, PayloadTooLarge when `size` alone exceeds it."""
        self._refuse(request, size, self.upload_bytes.take(caller(request), size))

    def _refuse(self, request: web.Request, size: int, wait: float) -> None:
        if wait == math.inf:
            raise PayloadTooLarge(f"{size:,} bytes exceed the upload quota of "
                                  f"{self.upload_bytes.capacity:,.0f} bytes an hour",
                                  code="over_upload_quota")
        if wait:
            raise RateLimited(f"{_whom(request)} used its upload quota of {self.upload_bytes.capacity:,.0f} "
                              "bytes an hour", retry_after_s=wait, code="upload_quota")


def _whom(request: web.Request) -> str:
    principal = request.get(PRINCIPAL)
    return f"the token {principal.name!r}" if principal is not None else "this address"


RATE_LIMITS = web.AppKey("rate_limits", RateLimits)
