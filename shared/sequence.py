"""A numbered, append-only log in the object store, read from its newest end in O(1).

Records are `<prefix><n:010d>.json` (n = 1, 2, ...), each written once with a conditional create
(`ObjectStore.create`): of two writers racing for number n one gets it and the other takes n + 1,
so none is lost and the keys sort in the order they were taken. A head object (`head_key`) names
the newest number and carries a copy of that record, so the newest record is one read of the head
plus one read of the number after it (which normally does not exist), however long the log is.

The head is advisory and moved forward only (a conditional write over the version read, retried):
a writer that stops between its record and the head leaves the head behind, and the next reader
finds the records after it by reading on, then moves the head up for the readers after it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from shared.errors import NotFound, ServiceUnavailable
from shared.store import AlreadyExists, ObjectStore, VersionMismatch

log = logging.getLogger(__name__)
_ADVANCE_TRIES = 100  # each lost race means another writer moved the head: progress

Record = dict[str, Any]


class Contended(ServiceUnavailable):
    """`Sequence.append` lost the race for a number more times than it tries."""

    default_code = "contended"


def _parse(data: bytes) -> Record:
    try:
        body = json.loads(data)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class Sequence:
    """The log under `prefix`, with its head at `head_key`; the head stores the newest number in
    `number_field`. Loop-only; any number of writers (in any number of processes) may append."""

    def __init__(self, store: ObjectStore, prefix: str, head_key: str, *,
                 number_field: str = "number") -> None:
        self.store, self.prefix, self.head_key, self.number_field = store, prefix, head_key, number_field

    def key(self, number: int) -> str:
        """The key of record `number`."""
        return f"{self.prefix}{number:010d}.json"

    async def head(self) -> tuple[int, Record | None]:
        """The head's number and body as stored: (0, None) when there is no head; a head without
        a number (written before the records, e.g. a registry's first pointer) counts as 0."""
        try:
            body = _parse(await self.store.get(self.head_key))
        except NotFound:
            return 0, None
        number = body.get(self.number_field)
        return (number if isinstance(number, int) and number >= 0 else 0), body

    async def get(self, number: int) -> Record:
        """Record `number` ({} when unreadable); raises NotFound."""
        return _parse(await self.store.get(self.key(number)))

    async def newest(self) -> tuple[int, Record | None]:
        """The newest number and its record (the head's copy of it): (0, head) when no record
        is written yet (the head may be None). Two reads when the head is up to date; a head
        left behind is moved up to the newest record found."""
        number, body = await self.head()
        found = number
        while True:
            try:
                record = await self.get(found + 1)
            except NotFound:
                break
            found, body = found + 1, record
        if found != number and body is not None:
            await self.advance(found, body)
        return found, body

    async def create(self, number: int, record: Record) -> None:
        """Write record `number` if nobody has; raises AlreadyExists otherwise. Give each writer
        distinct bytes (an id in `record`): see `ObjectStore.create`. Call `advance` after it."""
        await self.store.create(self.key(number), json.dumps(record).encode(),
                                content_type="application/json")

    async def advance(self, number: int, record: Record) -> None:
        """Move the head to `number` (holding a copy of `record`) unless it is there or past it
        already. Best effort: a head it cannot move is found behind by the next reader."""
        body = json.dumps({**record, self.number_field: number}).encode()
        for _ in range(_ADVANCE_TRIES):
            try:
                data, version = await self.store.get_versioned(self.head_key)
            except NotFound:
                data, version = b"", None
            stored = _parse(data).get(self.number_field) if version is not None else None
            if isinstance(stored, int) and stored >= number:
                return
            try:
                await self.store.put_if(self.head_key, body, version=version, content_type="application/json")
                return
            except VersionMismatch:
                continue  # another writer moved it: look again
        log.warning("could not move %s to %d in %d tries; readers read on past it", self.head_key, number,
                    _ADVANCE_TRIES)

    async def append(self, record: Record, *, only_first: bool = False, tries: int = 100) -> int | None:
        """Write `record` as the next number and move the head to it; return its number. With
        `only_first`, only as record 1: None when that exists. Raises Contended after losing
        `tries` numbers to other writers, and what the store raises."""
        number, _ = await self.newest()
        for _ in range(tries):
            number += 1
            if only_first and number != 1:
                return None
            try:
                await self.create(number, record)
            except AlreadyExists:
                continue  # another writer took this number: take the next
            await self.advance(number, record)
            return number
        raise Contended(f"{tries} other writers took the next number of {self.prefix} first")
