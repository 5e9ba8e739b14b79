"""`GET /data/summary` and `GET /data/samples`: what the stored catalog holds, computed here from
its records (never by the browser from raw files). Read-only; the summary's counts and charts are
open, the samples (which lead to patients' images) need a token of the `view` role or higher
(guarded in gateway/app.py).

- summary: images per split and class, the distribution of image sizes (longest side) and of
  aspect ratios (width / height), from the sizes the ingest recorded;
- samples: a few images per class, each with the URL of its server-made thumbnail
  (gateway/thumbnails.py). Not their split: which images are held out is the server's to know
  (`shared.catalog.split_for`); the summary's counts per split are all a client learns of it.

Both read the records through `gateway/catalog_view.py`, which reads only what changed.
"""

from __future__ import annotations

from collections import Counter

from aiohttp import web
from pydantic import BaseModel, Field

from gateway.catalog_view import CATALOG_VIEW
from shared.catalog import ImageRecord, counts
from shared.errors import BadRequest
from shared.taxonomy import CLASSES

#: Upper edges (px) of the longest-side bins; the last bin is open.
SIDE_EDGES = (256, 512, 768, 1024, 1536, 2048, 3072, 4096)
#: Upper edges of the width / height bins; the last bin is open.
ASPECT_EDGES = (0.5, 0.75, 0.9, 1.1, 1.25, 1.4, 1.6, 2.0)
DEFAULT_PER_CLASS, MAX_PER_CLASS = 4, 24


class Bin(BaseModel):
    """One bar of a histogram: `low` <= value < `high` (`high` None: no upper edge)."""

    low: float = Field(description="Lower edge, included.")
    high: float | None = Field(description="Upper edge, excluded; None for the last bin.")
    count: int = Field(description="Images in the bin.")


class Histogram(BaseModel):
    """A distribution over fixed bins, and the images whose size the catalog does not know."""

    bins: list[Bin]
    unknown: int = Field(description="Images without a recorded size.")


class SizeCount(BaseModel):
    width: int
    height: int
    count: int


class DataSummary(BaseModel):
    """`GET /data/summary`."""

    total: int = Field(description="Catalogued images.")
    classes: list[str] = Field(description="Classes that have images, in taxonomy order.")
    counts: dict[str, dict[str, int]] = Field(description="split ('train', 'eval') -> class -> images.")
    longest_side: Histogram = Field(description="Images by their longest side in pixels.")
    aspect_ratio: Histogram = Field(description="Images by width / height.")
    common_sizes: list[SizeCount] = Field(description="The ten commonest width x height, commonest first.")


class Sample(BaseModel):
    """One image of a class; never its split (held out or not)."""

    sha256: str
    width: int
    height: int
    thumbnail_url: str = Field(description="`GET` it for a small JPEG of the image.")


class ClassSamples(BaseModel):
    label: str
    count: int = Field(description="Images of this class in the catalog.")
    samples: list[Sample]


class DataSamples(BaseModel):
    """`GET /data/samples`."""

    classes: list[ClassSamples] = Field(description="Classes that have images, in taxonomy order.")


def histogram(values: list[float], edges: tuple[float, ...], unknown: int) -> Histogram:
    """`values` counted into the bins `[0, e0), [e0, e1), ..., [e_last, inf)`."""
    lows = (0.0, *edges)
    bins = [Bin(low=low, high=high, count=0) for low, high in zip(lows, (*edges, None), strict=True)]
    for value in values:
        index = sum(value >= edge for edge in edges)
        bins[index].count += 1
    return Histogram(bins=bins, unknown=unknown)


def _in_taxonomy_order(labels: set[str]) -> list[str]:
    return [c for c in CLASSES if c in labels] + sorted(labels - set(CLASSES))


def summarise(records: list[ImageRecord]) -> DataSummary:
    """The summary of `records` (pure: tests call it on made-up records)."""
    sized = [r for r in records if r.width > 0 and r.height > 0]
    sizes = Counter((r.width, r.height) for r in sized)
    unknown = len(records) - len(sized)
    return DataSummary(
        total=len(records), classes=_in_taxonomy_order({r.label for r in records}), counts=counts(records),
        longest_side=histogram([max(r.width, r.height) for r in sized], SIDE_EDGES, unknown),
        aspect_ratio=histogram([r.width / r.height for r in sized], ASPECT_EDGES, unknown),
        common_sizes=[SizeCount(width=w, height=h, count=n) for (w, h), n in sizes.most_common(10)])


def parse_per_class(raw: str | None) -> int:
    """`?per_class=`: 1 to MAX_PER_CLASS; raises BadRequest otherwise."""
    if raw is None:
        return DEFAULT_PER_CLASS
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not 1 <= int(raw) <= MAX_PER_CLASS:
        raise BadRequest(f"per_class must be a whole number from 1 to {MAX_PER_CLASS} (got {raw[:40]!r})",
                         code="invalid_per_class")
    return int(raw)


def by_label(records: list[ImageRecord]) -> dict[str, list[ImageRecord]]:
    """label -> its records by hash, labels in taxonomy order (pure)."""
    grouped: dict[str, list[ImageRecord]] = {}
    for record in records:
        grouped.setdefault(record.label, []).append(record)
    return {label: sorted(grouped[label], key=lambda r: r.sha256)
            for label in _in_taxonomy_order(set(grouped))}


async def data_summary(request: web.Request) -> web.Response:
    summary = await request.app[CATALOG_VIEW].derived("summary", summarise)
    return web.json_response(summary.model_dump(mode="json"))


async def data_samples(request: web.Request) -> web.Response:
    """The first `per_class` images of each class by hash: a fixed, unbiased pick."""
    per_class = parse_per_class(request.query.get("per_class"))
    grouped = await request.app[CATALOG_VIEW].derived("by_label", by_label)
    classes = [ClassSamples(label=label, count=len(records), samples=[
        Sample(sha256=r.sha256, width=r.width, height=r.height,
               thumbnail_url=f"/data/thumbnails/{r.sha256}") for r in records[:per_class]])
        for label, records in grouped.items()]
    return web.json_response(DataSamples(classes=classes).model_dump(mode="json"))
