"""The model's in-process limit on this machine: decode + preprocess + compiled forward, no serving.

    .venv/bin/python bench/raw_limit.py MODEL_DIR IMAGE_DIR --intra 2 --streams 1 --batch-sizes 1 8 16
    [--engine litert|tensorflow]

Uses exactly what the inference worker uses (`shared.imaging.load_for_model` and
`shared.classifier.Classifier`), so the serving benchmark compares like with like. `--streams N`
runs N threads, each decoding and predicting its own batches, sharing one model (what the
worker's streams do), on the worker's default engine unless `--engine` says otherwise; `--intra`
is the threads of each model call (LiteRT's or TensorFlow's intra-op pool), and TensorFlow's pools
are set first, which is why this runs in its own process. `--padding` instead times batches of
mixed sizes run as they are against the same batches zero-padded to a power of two, and the first
call of a new size. Prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference_worker.settings import WorkerSettings
from shared.classifier import ENGINES, Classifier, configure_threads
from shared.imaging import load_for_model


def run_streams(classifier: Classifier, blobs: list[bytes], *, batch: int, streams: int,
                seconds: float) -> dict[str, object]:
    """Images per second of `streams` threads, each decoding and predicting `batch` images at a time."""
    size = classifier.input_size
    counts, latencies = [0] * streams, [[] for _ in range(streams)]  # type: list[int], list[list[float]]
    start = threading.Barrier(streams + 1)

    def stream(k: int, stop_at: list[float]) -> None:
        i = k * 7
        start.wait()
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            pixels = np.stack([load_for_model(blobs[(i + j) % len(blobs)], size,
                                              policy=classifier.preprocessing) for j in range(batch)])
            classifier.predict(pixels)
            latencies[k].append(time.perf_counter() - t0)
            counts[k] += batch
            i += batch

    stop_at = [float("inf")]
    threads = [threading.Thread(target=stream, args=(k, stop_at)) for k in range(streams)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    flat = sorted(x for per in latencies for x in per)
    return {"batch": batch, "streams": streams, "rate": round(sum(counts) / elapsed, 2),
            "p50_ms": round(1000 * flat[len(flat) // 2], 2),
            "p90_ms": round(1000 * flat[int(0.9 * (len(flat) - 1))], 2), "calls": len(flat)}


def padding_check(classifier: Classifier, blobs: list[bytes], *, max_batch: int,
                  calls: int) -> dict[str, object]:
    """Forward-only ms per image for mixed batch sizes, exact shape vs padded to a power of two."""
    height, width = classifier.input_size
    pixels = np.stack([load_for_model(blob, (height, width),
                                      policy=classifier.preprocessing) for blob in blobs])
    rng = random.Random(0)
    sizes = [rng.randint(1, max_batch) for _ in range(calls)]

    def batch_of(n: int) -> np.ndarray:
        return pixels[np.arange(n) % len(pixels)]

    cold = []
    for n in (3, 5, 6, 7):  # sizes never run before in this process
        t0 = time.perf_counter()
        classifier.predict(batch_of(n))
        cold.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        classifier.predict(batch_of(n))
        cold[-1] -= (time.perf_counter() - t0) * 1000
    for n in range(1, max_batch + 1):
        classifier.predict(batch_of(n))

    def bucket(n: int) -> int:
        return min(max_batch, 1 << (n - 1).bit_length())

    timings: dict[str, float] = {}
    for name, shape_of in (("exact", lambda n: n), ("padded", bucket), ("exact_again", lambda n: n)):
        t0 = time.perf_counter()
        for n in sizes:
            batch = batch_of(n)
            padded = shape_of(n)
            if padded > n:
                batch = np.concatenate([batch, np.zeros((padded - n, height, width, 3), np.uint8)])
            classifier.predict(batch)[:n]
        timings[name] = round((time.perf_counter() - t0) * 1000 / sum(sizes), 3)
    return {"padding_ms_per_image": timings, "first_call_extra_ms": round(statistics.fmean(cold), 1),
            "max_batch": max_batch, "calls": calls}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="directory with model.keras + manifest.json")
    parser.add_argument("images", type=Path, help="directory of the JPEGs to decode")
    parser.add_argument("--intra", type=int, default=2)
    parser.add_argument("--inter", type=int, default=1)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--engine", choices=ENGINES, default=WorkerSettings().inference_engine)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--padding", action="store_true", help="run the padding check instead")
    args = parser.parse_args(argv)
    configure_threads(args.intra, args.inter)
    classifier = Classifier.load(args.model, engine=args.engine, threads=args.intra,
                                 cache_dir=WorkerSettings().litert_cache_dir)
    if classifier.engine != args.engine:
        raise SystemExit(f"{args.model} cannot run on {args.engine}")
    blobs = [p.read_bytes() for p in sorted(args.images.rglob("*.jpg"))]
    if args.padding:
        print(json.dumps(padding_check(classifier, blobs, max_batch=max(args.batch_sizes), calls=60)),
              flush=True)
        return 0
    for batch in args.batch_sizes:
        run_streams(classifier, blobs, batch=batch, streams=args.streams, seconds=min(1.0, args.seconds))
        row = run_streams(classifier, blobs, batch=batch, streams=args.streams, seconds=args.seconds)
        print(json.dumps({"engine": args.engine, "intra": args.intra, "inter": args.inter, **row}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
