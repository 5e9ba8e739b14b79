"""What a bigger backbone costs: serving (LiteRT raw limit) and fine-tuning speed per variant.

    .venv/bin/python bench/backbones.py [--variants efficientnet_lite0:192 efficientnet_lite2:224 ...]
        [--repeats 3] [--seconds 4] [--train-steps 3]

Each variant (backbone:input size) is built with random weights (speed does not depend on the
values) under the classifier head `trainer_service.ml.network.build_classifier` puts on it (8
classes, no OOD branch), saved, and loaded by the worker's own `Classifier` on LiteRT. Then, in
rounds that alternate the variants (the order reversed every other round, so that neither end
of a round is always the same variant):

- raw limit: `bench/raw_limit.py`'s measurement, decode + preprocess + forward of the bench
  JPEGs in 2 overlapped single-thread streams of batch 8 (the worker's defaults on 2 CPUs);
- training: img/s of `--train-steps` fine-tune steps of batch 32 as `trainer_service.ml.training`
  runs them (backbone unfrozen from the recipe's first trainable layer, BatchNorm frozen, AdamW,
  the augmented rebalanced stream), after one untimed step that traces the graph.

Each measurement records wall-clock img/s and the process's CPU time per image (all its
threads). On a shared, busy machine the wall rate mostly measures the neighbours; the CPU time
per image is what the variant itself costs, so the speed ratios to the first variant (default
Lite0 at 192, today's model) are taken from CPU time, round by round, then the median over
rounds (wall ratios are shown beside them). The expected raw limit on the quiet machine is that
ratio times today's 177-195 img/s. TensorFlow runs with the trainer's threads (2 intra-op,
1 inter-op); LiteRT's interpreters have their own single threads. Prints one JSON object per
measurement, then a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.inputs import make_images
from bench.raw_limit import run_streams
from shared.classifier import Classifier, configure_threads
from shared.imaging import DEFAULT_POLICY
from shared.manifest import ModelManifest

DEFAULT_VARIANTS = ("efficientnet_lite0:192", "efficientnet_lite0:224", "efficientnet_lite1:192",
                    "efficientnet_lite1:224", "efficientnet_lite2:192", "efficientnet_lite2:224")
CLASSES = 8  # the base model's
TODAY = (177.0, 195.0)  # Lite0 at 192's raw limit on the quiet machine (MODEL_CARD.md, Speed)


@dataclass
class Variant:
    """One backbone at one input size, its served classifier and its training model."""

    name: str
    size: int
    served: Classifier | None = None
    trained: object = None
    raw: list[float] = field(default_factory=list)  # img/s, wall clock, one per round
    raw_cpu: list[float] = field(default_factory=list)  # CPU ms per image
    train: list[float] = field(default_factory=list)
    train_cpu: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.name.removeprefix('efficientnet_')}@{self.size}"


def served_classifier(name: str, size: int, directory: Path) -> Classifier:
    """The classifier on backbone `name` saved under `directory` and loaded on LiteRT, 1 thread."""
    from trainer_service.ml.backbones import build_backbone
    from trainer_service.ml.network import build_classifier

    model = build_classifier(build_backbone(name, (size, size), pretrained=False), CLASSES)
    directory.mkdir(parents=True)
    model.save(directory / "model.keras")
    manifest = ModelManifest(version=f"bench-{name}-{size}", classes=[f"class_{i}" for i in range(CLASSES)],
                             input_size=(size, size), backbone=name, preprocessing=DEFAULT_POLICY)
    (directory / "manifest.json").write_text(manifest.model_dump_json())
    classifier = Classifier.load(directory, engine="litert", threads=1)
    if classifier.engine != "litert":
        raise SystemExit(f"{name}@{size} did not convert to LiteRT")
    classifier.warm_up(8, streams=2)
    return classifier


def training_model(name: str, size: int) -> object:
    """The classifier on backbone `name`, compiled for fine-tuning as `training.fine_tune` does."""
    import keras

    from trainer_service.ml.backbones import build_backbone
    from trainer_service.ml.network import build_classifier, set_backbone_trainable
    from trainer_service.ml.pipeline import set_cross_entropy
    from trainer_service.ml.training import Recipe

    recipe = Recipe()
    model = build_classifier(build_backbone(name, (size, size), pretrained=False), CLASSES)
    set_backbone_trainable(model, True, first_trainable=recipe.first_trainable)
    model.compile(optimizer=keras.optimizers.AdamW(recipe.learning_rate, weight_decay=recipe.weight_decay),
                  loss=set_cross_entropy(np.eye(CLASSES)))
    return model


def train_rate(model: object, size: int, *, steps: int, batch: int) -> tuple[float, float]:
    """(images per second, CPU ms per image) of `steps` fit steps on the augmented stream of
    random pixels."""
    from trainer_service.ml.pipeline import training_stream

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2 * batch, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, CLASSES, 2 * batch)
    stream = training_stream(images, labels, CLASSES, batch_size=batch, seed=0)
    t0, cpu0 = time.perf_counter(), time.process_time()
    model.fit(stream, epochs=1, steps_per_epoch=steps, verbose=0)  # type: ignore[attr-defined]
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return steps * batch / wall, cpu * 1000 / (steps * batch)


def ratios(values: list[list[float]], *, cost: bool = False) -> list[float]:
    """Per variant, the median over rounds of its speed / the first variant's in the same round
    (a `cost` such as CPU ms per image is inverted first)."""
    return [statistics.median((base / v) if cost else (v / base)
                              for v, base in zip(row, values[0], strict=True)) for row in values]


def runs(values: list[float], digits: int = 0) -> str:
    return " / ".join(f"{x:.{digits}f}" for x in values)


def table(variants: list[Variant], command: str) -> str:
    """The Markdown table: per-round figures, ratios to the first variant, the expected limit."""
    raw_cpu, raw_wall = ratios([v.raw_cpu for v in variants], cost=True), ratios([v.raw for v in variants])
    train_cpu = ratios([v.train_cpu for v in variants], cost=True)
    lines = [f"`{command}`", "",
             "| backbone @ input | raw img/s, wall | raw CPU ms/img | raw speed vs first: CPU (wall) "
             "| expected raw limit, quiet | train img/s, wall | train CPU ms/img | train speed vs first |",
             "|---|---|---|---:|---:|---|---|---:|"]
    for k, v in enumerate(variants):
        expected = f"{raw_cpu[k] * TODAY[0]:.0f}-{raw_cpu[k] * TODAY[1]:.0f}"
        lines.append(f"| {v.label} | {runs(v.raw)} | {runs(v.raw_cpu, 1)} "
                     f"| {raw_cpu[k]:.2f} ({raw_wall[k]:.2f}) | {expected} "
                     f"| {runs(v.train, 1)} | {runs(v.train_cpu)} | {train_cpu[k]:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), metavar="NAME:SIZE")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="raw-limit seconds per measurement")
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args(argv)
    configure_threads(2, 1)  # the trainer's (trainer_service train --threads 2)
    variants = [Variant(spec.split(":")[0], int(spec.split(":")[1])) for spec in args.variants]
    with tempfile.TemporaryDirectory() as tmp:
        blobs = [p.read_bytes() for p in make_images(Path(tmp) / "images")]
        for k, v in enumerate(variants):
            v.served = served_classifier(v.name, v.size, Path(tmp) / f"model{k}")
            if not args.skip_train:
                v.trained = training_model(v.name, v.size)
                train_rate(v.trained, v.size, steps=1, batch=args.train_batch)  # traces the graph
        for round_number in range(args.repeats):
            order = variants if round_number % 2 == 0 else variants[::-1]
            for v in order:
                assert v.served is not None
                run_streams(v.served, blobs, batch=8, streams=2, seconds=1.0)
                cpu0 = time.process_time()
                row = run_streams(v.served, blobs, batch=8, streams=2, seconds=args.seconds)
                cpu_ms = (time.process_time() - cpu0) * 1000 / (int(str(row["calls"])) * 8)
                v.raw.append(float(str(row["rate"])))
                v.raw_cpu.append(cpu_ms)
                print(json.dumps({"round": round_number, "variant": v.label, "raw": row,
                                  "cpu_ms_per_image": round(cpu_ms, 2)}), flush=True)
            for v in [] if args.skip_train else order:
                rate, cpu_ms = train_rate(v.trained, v.size, steps=args.train_steps, batch=args.train_batch)
                v.train.append(rate)
                v.train_cpu.append(cpu_ms)
                print(json.dumps({"round": round_number, "variant": v.label, "train_img_s": round(rate, 2),
                                  "train_cpu_ms_per_image": round(cpu_ms, 1)}), flush=True)
    if args.skip_train:
        for v in variants:
            v.train = v.train_cpu = [float("nan")] * args.repeats
    command = " ".join(["python bench/backbones.py", *(argv if argv is not None else sys.argv[1:])])
    print(table(variants, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
