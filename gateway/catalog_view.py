"""The stored catalog as the gateway's Data views (`GET /data/*`: the counts open, the samples for
the `view` role) read it, without reading all of it per request.

Every catalog object (a batch, or a part of a batch still open) is parsed once and kept by key
with the stamp its listing gave (`ObjectStore.list_stamped`: S3's ETag, a file's inode and times);
a request lists `catalog/` (one LIST) and reads only the objects that are new or whose stamp
changed (a batch ended again under its key), so what it answers is the catalog as listed, never
an older read of it. What a view derives from the records (`derived`) is kept until they change.
At 10,000 catalogued images the records are about 3.7 MB of JSON: reading and summarising them
took ~70 ms of the event loop per request (and one GET per part of an open batch) before this view.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar, cast

from aiohttp import web

from shared.catalog import Catalog, ImageRecord, unique
from shared.store import ObjectStore

T = TypeVar("T")


class CatalogView:
    """The catalog's records, read again only where the catalog changed. Loop-only; concurrent
    callers share one read."""

    def __init__(self, store: ObjectStore) -> None:
        self.catalog = Catalog(store)
        self._lock = asyncio.Lock()
        self._stamps: dict[str, str] = {}  # key -> the stamp of the listing it was read after
        self._by_key: dict[str, list[ImageRecord]] = {}
        self._records: list[ImageRecord] = []
        self._derived: dict[str, object] = {}

    async def records(self) -> list[ImageRecord]:
        """Every catalogued image once (as `Catalog.records`); raises as the store does."""
        async with self._lock:
            return await self._refresh()

    async def derived(self, name: str, make: Callable[[list[ImageRecord]], T]) -> T:
        """`make(records)`, computed once per state of the catalog and kept under `name`."""
        async with self._lock:
            records = await self._refresh()
            if name not in self._derived:
                self._derived[name] = make(records)
            return cast(T, self._derived[name])

    async def _refresh(self) -> list[ImageRecord]:
        stamps = await self.catalog.stamped_keys()
        if stamps == self._stamps:
            return self._records
        # read after the listing: an object written again meanwhile is read newer than its
        # stamp says, and read once more at the next request
        self._by_key = {key: self._by_key[key] if self._stamps.get(key) == stamp
                        else await self.catalog.records_in(key) for key, stamp in stamps.items()}
        self._stamps = stamps
        self._records = unique(list(self._by_key.values()))
        self._derived.clear()
        return self._records


CATALOG_VIEW = web.AppKey("catalog_view", CatalogView)
