"""The model registry in the object store.

Layout, per version: `models/<version>/model.keras`, `models/<version>/manifest.json` (and
`models/<version>/model.tflite`, the model as LiteRT, where the manifest's `litert` names it;
`models/<version>/evidence.npz`, its training evidence, where it has one). Two append-only logs
(`shared.sequence`), each read from its newest end without listing it:

    models/promotions/<n>.json   one record per promotion; head `models/current.json` (`promotion`: n)
    models/published/<n>.json    one record per published version; head `models/published.json`

Each record is written once with a conditional create: of two promotions racing for number n one
gets it and the other takes n + 1, so none is lost; the version served is the newest record's.
`current.json` is the head: it holds a copy of the newest record, so the current version is two
reads (the head, and the record after it, which is normally not there) however long the history.
The pointer moves only through `promote`. An empty store is seeded from the bundled model by
`bootstrap`. Listings (`versions_page`, `history_page`) read one page from the newest end.

Stores written before these logs keep what they had: a `current.json` without a number counts
until the first promotion record is written; the versions published before the version log are
listed once, by the first registry that needs the log, into `models/published/0000000000.json`,
which comes before its records. Positions: records are numbered 1, 2, ...; what came before them
0, -1, ... (newest first).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from shared.atomic_file import write_whole
from shared.errors import Conflict, NotFound, ServiceUnavailable
from shared.litert import read_published
from shared.manifest import ModelManifest, utcnow
from shared.messages import new_id
from shared.sequence import Contended, Record, Sequence
from shared.store import AlreadyExists, ObjectStore

log = logging.getLogger(__name__)

ARTIFACT = "model.keras"
MANIFEST = "manifest.json"
EVIDENCE = "evidence.npz"  # what its head was trained, validated and judged on (trainer_service.ml.evidence)
CURRENT_KEY = "models/current.json"
PROMOTIONS = "models/promotions/"
PUBLISHED = "models/published/"
PUBLISHED_KEY = "models/published.json"
EARLIER_VERSIONS_KEY = f"{PUBLISHED}0000000000.json"  # versions published before the version log
_ROLLBACK_PAGE = 16
T = TypeVar("T")


def _key(version: str, name: str) -> str:
    return f"models/{version}/{name}"


def _entry(record: Record) -> dict[str, str]:
    return {"version": str(record.get("version")), "promoted_at": str(record.get("promoted_at"))}


async def _nothing_earlier() -> list[dict[str, str]]:
    """What came before the promotion records: nothing (every promotion is a record)."""
    return []


class ModelRegistry:
    """Versions of the model, kept in an `ObjectStore`. Loop-only; any number of registries
    (in any number of processes) may publish and promote at once."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._promotions = Sequence(store, PROMOTIONS, CURRENT_KEY, number_field="promotion")
        self._published = Sequence(store, PUBLISHED, PUBLISHED_KEY)

    async def current_version(self) -> str | None:
        """The promoted version, or None for an empty registry. Two store reads."""
        _, newest = await self._promotions.newest()
        return None if newest is None or "version" not in newest else str(newest["version"])

    async def manifest(self, version: str) -> ModelManifest:
        """The manifest of `version`; raises NotFound."""
        return ModelManifest.model_validate_json(await self.store.get(_key(version, MANIFEST)))

    async def versions(self) -> list[ModelManifest]:
        """Every published version, oldest first (by `created_at`). Reads them all: a page of
        them is `versions_page`."""
        manifests, _ = await self.versions_page(None)
        return sorted(manifests, key=lambda m: m.created_at)

    async def versions_page(self, limit: int | None, before: int | None = None
                            ) -> tuple[list[ModelManifest], int | None]:
        """Up to `limit` versions (None: all) published before position `before` (None: the
        newest), in the order they were published, and the position to pass as `before` for the
        page before them (None: there is none). About two store reads per version, whatever the
        number of versions."""
        newest = await self._published_newest()
        items, earlier = await self._walk(self._published, newest, lambda r: str(r.get("version")),
                                          self._earlier_versions, before, limit)
        names = list(dict.fromkeys(name for _, name in items))  # newest first; a version once
        found = await asyncio.gather(*(self._manifest_or_none(name) for name in names))
        return [m for m in reversed(found) if m is not None], earlier

    async def _manifest_or_none(self, version: str) -> ModelManifest | None:
        try:
            return await self.manifest(version)
        except NotFound:
            return None

    async def publish(self, artifact: Path, manifest: ModelManifest, *,
                      evidence: bytes | None = None) -> None:
        """Store an artifact, its LiteRT file (when `manifest.litert` names one: beside the artifact,
        checked against its digest, ValueError if it differs), its training evidence (when it has
        one) and its manifest as a new version (does not promote it). The manifest goes last, then
        the version's record in the version log: a version is listed only once its files are all
        there. Publishing a version again replaces its files and keeps its place in the list."""
        await self._published_newest()  # the log exists before this version's files (_list_earlier)
        known = await self.store.exists(_key(manifest.version, MANIFEST))
        await self.store.put(_key(manifest.version, ARTIFACT), await asyncio.to_thread(artifact.read_bytes))
        if manifest.litert is not None:
            await self.store.put(_key(manifest.version, manifest.litert.file),
                                 await asyncio.to_thread(read_published, artifact.parent, manifest.litert))
        if evidence is not None:
            await self.store.put(_key(manifest.version, EVIDENCE), evidence)
        await self.store.put(
            _key(manifest.version, MANIFEST),
            manifest.model_dump_json(indent=2).encode(),
            content_type="application/json",
        )
        if not known:
            await self._published.append({"version": manifest.version, "published_id": new_id()})

    async def _published_newest(self) -> int:
        """The newest number of the version log, first listing the versions published before it
        when there is no log yet."""
        number, head = await self._published.newest()
        if head is None:
            await self._list_earlier()
            number, _ = await self._published.newest()
        return number

    async def _list_earlier(self) -> None:
        """Write the versions in the store (published before the version log) as the log's
        record 0, once: the first writer's list stands. Every later publish starts after the log
        exists (`publish`), so no version is in both."""
        names = {key.split("/")[1] for key in await self.store.list("models/")
                 if key.count("/") == 2 and key.endswith(f"/{MANIFEST}")}
        found = await asyncio.gather(*(self._manifest_or_none(name) for name in sorted(names)))
        ordered = [m.version for m in sorted((m for m in found if m is not None), key=lambda m: m.created_at)]
        listed = json.dumps({"versions": ordered, "listed_id": new_id()}).encode()
        with contextlib.suppress(AlreadyExists):  # another registry listed them first: its list stands
            await self.store.create(EARLIER_VERSIONS_KEY, listed, content_type="application/json")
        await self._published.advance(0, {})

    async def _earlier_versions(self) -> list[str]:
        try:
            versions = json.loads(await self.store.get(EARLIER_VERSIONS_KEY)).get("versions", [])
        except (NotFound, ValueError, AttributeError):
            return []
        return [str(v) for v in versions] if isinstance(versions, list) else []

    async def evidence(self, version: str) -> bytes:
        """The training evidence of `version`; raises NotFound when it has none."""
        return await self.store.get(_key(version, EVIDENCE))

    async def history(self) -> list[dict[str, str]]:
        """Promotions, oldest first: `{"version", "promoted_at"}`. Reads them all: a page of them
        is `history_page`."""
        entries, _ = await self.history_page(None)
        return entries

    async def history_page(self, limit: int | None, before: int | None = None
                           ) -> tuple[list[dict[str, str]], int | None]:
        """Up to `limit` promotions (None: all) made before position `before` (None: the newest),
        oldest first, and the position of the page before them (None: there is none). One store
        read per promotion, whatever the length of the history."""
        newest, _ = await self._promotions.newest()
        items, earlier = await self._walk(self._promotions, newest, _entry, _nothing_earlier, before, limit)
        return [entry for _, entry in reversed(items)], earlier

    async def _walk(self, log: Sequence, newest: int, value: Callable[[Record], T],
                    earlier: Callable[[], Awaitable[list[T]]], before: int | None, limit: int | None
                    ) -> tuple[list[tuple[int, T]], int | None]:
        """Up to `limit` (position, value) pairs of `log` below position `before` (None: from
        `newest`), newest first: records `newest`..1, then what came before them (`earlier`, oldest
        first, at positions ..., -1, 0), read only when the page reaches them; and the position
        to continue from (None: nothing is left)."""
        top = newest if before is None else min(before - 1, newest)
        numbers = list(range(top, 0 if limit is None else max(top - limit, 0), -1))
        records = await asyncio.gather(*(self._record(log, n) for n in numbers))
        items = [(n, value(r)) for n, r in zip(numbers, records, strict=True) if r is not None]
        left = None if limit is None else limit - len(numbers)
        more = bool(numbers) and numbers[-1] > 1
        if not more:
            old = await earlier()
            positions = range(min(top, 0), -len(old), -1)
            taken = positions if left is None else positions[:left]
            items += [(p, old[len(old) - 1 + p]) for p in taken]
            more = len(taken) < len(positions)
        return items, (items[-1][0] if more and items else None)

    @staticmethod
    async def _record(log: Sequence, number: int) -> Record | None:
        try:
            return await log.get(number)
        except NotFound:
            return None

    async def promote(self, version: str) -> None:
        """Make `version` current and record it in the history; raises NotFound for an unknown
        version. Concurrent promotions are all recorded, in the order they took their numbers;
        the last of them is current."""
        await self.manifest(version)
        await self._append(version)

    async def _append(self, version: str, *, only_first: bool = False) -> bool:
        """Write the next promotion record for `version` and move `current.json` to it (with
        `only_first`, only record 1: False when it exists)."""
        record = {"version": version, "promoted_at": utcnow().isoformat(),
                  "promotion_id": new_id()}  # distinct bytes per writer
        try:
            return await self._promotions.append(record, only_first=only_first) is not None
        except Contended as exc:
            raise ServiceUnavailable(f"could not record the promotion of {version}: {exc}",
                                     code="promotion_contended") from None

    async def rollback(self) -> str:
        """Promote the version that was current before this one; raises Conflict if none."""
        current = await self.current_version()
        before: int | None = None
        while current is not None:
            entries, before = await self.history_page(_ROLLBACK_PAGE, before)
            earlier = [entry["version"] for entry in entries if entry["version"] != current]
            if earlier:
                await self.promote(earlier[-1])
                return earlier[-1]
            if before is None:
                break
        raise Conflict("no earlier version to roll back to", code="nothing_to_roll_back")

    async def fetch(self, version: str, cache_dir: Path) -> Path:
        """Download `version` into `cache_dir/<version>/` (once) and return that directory: its
        manifest, its Keras file and its LiteRT file when the manifest names one (one missing from
        the store is logged and left out: the worker serves the Keras file)."""
        target = cache_dir / version
        if not (target / ARTIFACT).is_file():
            target.mkdir(parents=True, exist_ok=True)
            write_whole(target / MANIFEST, await self.store.get(_key(version, MANIFEST)))
        manifest = ModelManifest.model_validate_json(await asyncio.to_thread((target / MANIFEST).read_bytes))
        wanted = [ARTIFACT, *([manifest.litert.file] if manifest.litert else [])]
        await asyncio.gather(*(self._download(version, name, target) for name in wanted
                               if not (target / name).is_file()))
        return target

    async def _download(self, version: str, name: str, target: Path) -> None:
        try:
            data = await self.store.get(_key(version, name))
        except NotFound:
            if name == ARTIFACT:
                raise
            log.warning("model %s: %s is not in the store; its Keras file will serve", version, name)
            return
        write_whole(target / name, data)

    async def bootstrap(self, bundled_dir: Path) -> str:
        """Seed an empty registry with the bundled model; return the current version. Services
        starting together seed it once: only the first promotion record may be written."""
        current = await self.current_version()
        if current is not None:
            return current
        manifest = ModelManifest.model_validate_json((bundled_dir / MANIFEST).read_text())
        log.info("empty registry: publishing bundled model %s", manifest.version)
        evidence = bundled_dir / EVIDENCE
        await self.publish(bundled_dir / ARTIFACT, manifest,
                           evidence=evidence.read_bytes() if evidence.is_file() else None)
        await self._append(manifest.version, only_first=True)
        current = await self.current_version()
        assert current is not None  # record 1 exists now, ours or another starter's
        return current
