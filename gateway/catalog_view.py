"""The stored catalog as the gateway's Data views (`GET /data/*`: the counts open, the samples for
the `view` role) read it, without reading all of it per request.

Every catalog object (a batch, or a part of a batch still open) is parsed once and kept by key; a
request lists `catalog/` (one LIST) and reads only the objects it has not seen. A batch object can
be rewritten under its key, so everything is read afresh once it is `max_age_s` old. What a view
derives from the records (`derived`) is kept until they change. At 10,000 catalogued images the
records are about 3.7 MB of JSON: reading and summarising them took ~70 ms of the event loop per
request (and one GET per part of an open batch) before this view.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import TypeVar, cast

from aiohttp import web

from shared.catalog import Catalog, ImageRecord, unique
from shared.store import ObjectStore

T = TypeVar("T")


class CatalogView:
    """The catalog's records, read again only where the catalog changed. Loop-only; concurrent
    callers share one read."""

    def __init__(self, store: ObjectStore, max_age_s: float) -> None:
        self.catalog = Catalog(store)
        self.max_age_s = max_age_s
        self._lock = asyncio.Lock()
        self._by_key: dict[str, list[ImageRecord]] = {}
        self._records: list[ImageRecord] = []
        self._derived: dict[str, object] = {}
        self._read_at = -math.inf

    async def records(self) -> list[ImageRecord]:
        """Every catalogued image once (as `Catalog.records`); raises as the store does."""
        async with self._lock:
            return await self._refresh()

    async def derived(self, name: str, make: Callable[[list[ImageRecord]], T], *, fresh: bool = False) -> T:
        """`make(records)`, computed once per state of the catalog and kept under `name`; with
        `fresh`, on every object read again now (a refusal must not rest on a stale read)."""
        async with self._lock:
            if fresh:
                self._read_at = -math.inf
            records = await self._refresh()
            if name not in self._derived:
                self._derived[name] = make(records)
            return cast(T, self._derived[name])

    async def _refresh(self) -> list[ImageRecord]:
        now = asyncio.get_running_loop().time()
        keys = await self.catalog.keys()
        stale = now - self._read_at > self.max_age_s
        if not stale and keys == list(self._by_key):
            return self._records
        known = {} if stale else self._by_key
        self._by_key = {key: known[key] if key in known else await self.catalog.records_in(key)
                        for key in keys}
        if stale:
            self._read_at = now
        self._records = unique(list(self._by_key.values()))
        self._derived.clear()
        return self._records


CATALOG_VIEW = web.AppKey("catalog_view", CatalogView)
