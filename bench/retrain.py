"""How fast is a head-only retrain after a 100-image upload onto an ~8,000-image training set?

    .venv/bin/python bench/retrain.py ../shared/data/ham10000

Imports the dataset (all but 100 training images) into a fresh local store, caches embeddings
under the bundled base model (the cold cost), uploads the 100 held-back images through the real
ingest service, then runs one training job through the real trainer service (in-memory bus) and
prints the time of each step. The target: the job is promoted or rejected in under 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from embedded.system import build_system
from ingest_service.settings import IngestSettings
from shared.bus import connect_bus
from shared.catalog import Catalog
from shared.jobs import IngestResult, Job, JobStore, TrainResult
from shared.messages import IngestRequest, StagedFile, TrainOptions, TrainRequest, encode
from shared.registry import ModelRegistry
from shared.settings import CommonSettings
from shared.store import open_store
from trainer_service.importer import import_dataset
from trainer_service.retrain import Progress, ensure_embeddings, load_current
from trainer_service.settings import TrainerSettings


def split_off(data: Path, work: Path, count: int) -> tuple[Path, list[Path]]:
    """A copy of `data` (symlinks) without `count` random training images, and those images."""
    train = sorted(data.glob("train/*/*.jpg"))
    held_back = random.Random(0).sample(train, count)
    view = work / "dataset"
    skip = set(held_back)
    for image in sorted(data.glob("*/*/*.jpg")):
        if image not in skip:
            target = view / image.relative_to(data)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(image.resolve())
    if (data / "metadata.csv").is_file():
        (view / "metadata.csv").symlink_to((data / "metadata.csv").resolve())
    return view, held_back


async def wait(jobs: JobStore, job_id: str) -> Job:
    while not (job := await jobs.get(job_id)).final:  # noqa: ASYNC110 - a job record has no notifications
        await asyncio.sleep(0.2)
    return job


async def main(data: Path, uploads: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="dermascan-bench-retrain-"))
    common: dict[str, Any] = {"store_url": (work / "store").as_uri(), "metrics_port": 0}
    store = await open_store(common["store_url"])
    registry = ModelRegistry(store)
    await registry.bootstrap(CommonSettings().bundled_model_dir)
    view, held_back = split_off(data, work, uploads)

    t0 = time.perf_counter()
    summary = await import_dataset(store, view, log=lambda _: None)
    print(f"import: {summary} in {time.perf_counter() - t0:.1f} s")

    settings = TrainerSettings(**common, work_dir=work / "trainer")
    t0 = time.perf_counter()
    current = await load_current(registry, settings.work_dir)
    records = await Catalog(store).records()
    await ensure_embeddings(store, current, records, batch_size=settings.embed_batch_size,
                            progress=Progress(), log=lambda _: None)
    cold = time.perf_counter() - t0
    print(f"embeddings (cold cache, {len(records)} images): {cold:.1f} s = {len(records) / cold:.0f} img/s")

    bus = await connect_bus("memory://")
    jobs = JobStore(store)
    system = build_system(bus, store, ingest=IngestSettings(**common), trainer=settings)
    await system.start()

    t0 = time.perf_counter()
    job = await jobs.save(Job(kind="ingest", progress={"files": uploads, "done": 0}, result=IngestResult()))
    staged = []
    for index, path in enumerate(held_back):
        key = f"uploads/{job.job_id}/{index:05d}"
        await store.put(key, path.read_bytes())
        staged.append(StagedFile(key=key, filename=f"{path.parent.name}_{path.name}",
                                 size=path.stat().st_size))
    await bus.publish(settings.ingest_queue, encode(IngestRequest(job_id=job.job_id, files=staged)))
    done = await wait(jobs, job.job_id)
    stored = done.result.stored if isinstance(done.result, IngestResult) else 0
    print(f"upload of {uploads} images: {stored} stored in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    job = await jobs.save(Job(kind="train"))
    await bus.publish(settings.train_queue, encode(TrainRequest(job_id=job.job_id, options=TrainOptions())))
    done = await wait(jobs, job.job_id)
    seconds = time.perf_counter() - t0
    print(f"head-only retrain: {done.state} in {seconds:.1f} s (target < 60 s)")
    if isinstance(done.result, TrainResult):
        baseline = done.result.gate.current_balanced_accuracy
        print(f"version {done.result.version}; balanced accuracy {done.result.balanced_accuracy:.4f} "
              f"vs current {baseline if baseline is not None else float('nan'):.4f}")
    for line in done.log:
        print("   ", line)
    await system.stop()
    await bus.close()
    await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="dataset with train/ and eval/ class folders")
    parser.add_argument("--uploads", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    asyncio.run(main(args.data, args.uploads))
