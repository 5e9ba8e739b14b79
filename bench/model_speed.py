"""Images per second of a model artifact on this machine: preprocessing + compiled forward pass.

    .venv/bin/python bench/model_speed.py [--artifact models/base] [--images tests/fixtures/ham10000]

For each batch size it decodes JPEG bytes with `shared.imaging.load_for_model` (the worker's
preprocessing, sequentially in one thread) and runs the model through a `tf.function` traced
once with a (None, h, w, 3) input signature, as the inference worker does, never
`model.predict`. It prints end-to-end and forward-only throughput and per-batch latency.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per batch size. Returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", type=Path, default=REPO / "models/base")
    p.add_argument("--images", type=Path, default=REPO / "tests/fixtures/ham10000")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--seconds", type=float, default=10.0, help="measuring time per batch size")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from shared.imaging import load_for_model
    from trainer_service.artifacts import load_artifact
    from trainer_service.evaluation import compiled_forward

    model, manifest = load_artifact(args.artifact)
    size = (int(manifest.input_size[0]), int(manifest.input_size[1]))
    blobs = [f.read_bytes() for f in sorted(args.images.rglob("*.jpg"))]
    if not blobs:
        print(f"no .jpg under {args.images}", file=sys.stderr)
        return 1
    forward = compiled_forward(model)
    forward(tf.zeros((1, *size, 3)))  # trace once
    print(f"model {manifest.version} ({manifest.backbone}, input {size[0]}x{size[1]}), "
          f"{args.threads} TF threads, {len(blobs)} distinct JPEGs")
    for batch in args.batch_sizes:
        forward(tf.zeros((batch, *size, 3)))  # warm up this shape
        latencies, forward_only, done, start, i = [], [], 0, time.perf_counter(), 0
        while time.perf_counter() - start < args.seconds:
            t0 = time.perf_counter()
            pixels = np.stack([load_for_model(blobs[(i + j) % len(blobs)], size) for j in range(batch)])
            t1 = time.perf_counter()
            forward(tf.constant(pixels, tf.float32)).numpy()
            t2 = time.perf_counter()
            latencies.append(t2 - t0)
            forward_only.append(t2 - t1)
            done += batch
            i += batch
        total = sum(latencies)
        print(
            f"batch {batch:>2}: {done / total:7.1f} images/s end-to-end, "
            f"{done / sum(forward_only):7.1f} images/s forward only; "
            f"batch latency median {1000 * statistics.median(latencies):.1f} ms "
            f"(p90 {1000 * float(np.percentile(latencies, 90)):.1f} ms), {len(latencies)} batches"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
