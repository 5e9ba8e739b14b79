"""Cached image embeddings, per backbone, so head-only retrains skip the expensive forward pass.

Shards live at `embeddings/<backbone>/<batch>.npz` (arrays `hashes` and float16 `vectors`);
each run adds one shard with what it had to compute and reads all of them.
"""

from __future__ import annotations

import asyncio
import functools
import io
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from shared.catalog import ImageRecord
from shared.decode_budget import DecodeBudget
from shared.imaging import load_for_model
from shared.store import ObjectStore

_FETCH_CONCURRENCY = 16
#: Threads decoding a batch's images; they wait on the decode budget, so they are embed()'s own.
_DECODE_THREADS = 4
#: Bytes of decoded pixels a batch's decodes hold at once. The catalog admits images of up to
#: 40 MP (160 MB decoded), and a batch of 64 such decoded together took a retrain past 3.5 GB;
#: within this bound one of them decodes alone and ordinary ones (under 1 MP) forty at a time.
DECODE_BUDGET_BYTES = 192 * 2**20


async def load_cache(store: ObjectStore, backbone: str) -> dict[str, np.ndarray]:
    """Every cached embedding of `backbone`, by image hash."""
    cache: dict[str, np.ndarray] = {}
    for key in await store.list(f"embeddings/{backbone}/"):
        with np.load(io.BytesIO(await store.get(key))) as shard:
            for sha, vector in zip(shard["hashes"], shard["vectors"], strict=True):
                cache[str(sha)] = vector
    return cache


async def save_shard(store: ObjectStore, backbone: str, computed: dict[str, np.ndarray]) -> None:
    if not computed:
        return
    buffer = io.BytesIO()
    hashes = np.array(sorted(computed))
    np.savez(buffer, hashes=hashes, vectors=np.stack([computed[h] for h in hashes]).astype(np.float16))
    await store.put(f"embeddings/{backbone}/{time.strftime('%Y%m%dT%H%M%S')}-{hashes[0][:12]}.npz",
                    buffer.getvalue())


async def embed(
    store: ObjectStore,
    records: Sequence[ImageRecord],
    embedder: Callable[[np.ndarray], np.ndarray],
    input_size: tuple[int, int],
    *,
    policy: str,
    batch_size: int,
    on_progress: Callable[[int], None] | None = None,
    decode_budget_bytes: int = DECODE_BUDGET_BYTES,
) -> dict[str, np.ndarray]:
    """Embeddings of `records` (fetched, decoded with the shared preprocessing and the model's
    `policy`, run through `embedder` in a thread), by hash. A batch's images are decoded at most
    `decode_budget_bytes` of pixels at a time (and a JPEG at the scale the model needs), so the
    memory a batch takes does not grow with the size of its images."""
    limit = asyncio.Semaphore(_FETCH_CONCURRENCY)
    budget = DecodeBudget(decode_budget_bytes)
    loop = asyncio.get_running_loop()
    decoders = ThreadPoolExecutor(_DECODE_THREADS, "embed-decode")

    async def pixels(record: ImageRecord) -> np.ndarray:
        async with limit:
            data = await store.get(record.key)
        return await loop.run_in_executor(decoders, functools.partial(
            load_for_model, data, input_size, policy=policy, budget=budget))

    out: dict[str, np.ndarray] = {}
    try:
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            images = np.stack(await asyncio.gather(*(pixels(r) for r in chunk)))
            vectors = await asyncio.to_thread(embedder, images)
            out.update({r.sha256: v for r, v in zip(chunk, vectors, strict=True)})
            if on_progress is not None:
                on_progress(len(out))
    finally:  # not waited for: a cancelled training must not block the loop on a decode
        decoders.shutdown(wait=False, cancel_futures=True)
    return out
