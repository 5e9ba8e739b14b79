"""A batch of images that decode large (PNGs of a few dozen KB, 16 megapixels each) costs a retrain
a bounded amount of memory: its decodes share a budget of bytes instead of running all at once."""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from shared.catalog import ImageRecord
from shared.imaging import SHADES_OF_GRAY_V2
from shared.store import open_store
from trainer_service.ml.embeddings import embed

pytestmark = pytest.mark.timeout(60)
MIB = 2**20


class PeakRss:
    """The highest RSS of this process seen while the `with` block runs (sampled every 2 ms)."""

    def __enter__(self) -> PeakRss:
        self._process, self._stop = psutil.Process(), threading.Event()
        self.before = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


async def test_a_batch_of_images_that_decode_large_is_decoded_within_the_budget(tmp_path: Path) -> None:
    store = await open_store(tmp_path.as_uri())
    records = []
    for n in range(8):  # the 9 KB zip of the audit, at 16 MP instead of 40 to keep the test short
        out = io.BytesIO()
        Image.new("RGB", (4000, 4000), (150, 90 + n, 70)).save(out, format="PNG")
        data = out.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        await store.put(f"images/{sha}.png", data)
        records.append(ImageRecord(sha256=sha, label="melanoma", key=f"images/{sha}.png", split="train",
                                   source="upload"))

    def embedder(images: np.ndarray) -> np.ndarray:
        assert images.shape == (8, 224, 224, 3)
        return np.zeros((len(images), 4), dtype=np.float32)

    with PeakRss() as rss:
        vectors = await embed(store, records, embedder, (224, 224), policy=SHADES_OF_GRAY_V2, batch_size=8)
    assert len(vectors) == 8
    grew = (rss.peak - rss.before) / MIB
    # 8 x 61 MiB decoded at once, with a copy each, took a gigabyte; the budget holds 192 MiB
    assert grew < 320, f"peak RSS grew {grew:.0f} MiB during the batch"
    print(f"peak RSS grew {grew:.0f} MiB during a batch of 8 PNGs of 16 MP")
    await store.close()
