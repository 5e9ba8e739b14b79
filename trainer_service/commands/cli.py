"""Command-line entry points: the options of `train` (a model artifact) and `evaluate` (one on a
labelled set), and the options and helpers the offline commands share. The commands' work is in
their own modules (`train.train`, `evaluate.evaluate`), imported after the options are read.

`python -m trainer_service train|evaluate ...` routes here (`train_main`, `evaluate_main`);
`python -m trainer_service.commands.cli train|evaluate ...` works too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from shared.classifier import configure_threads
from shared.manifest import ModelManifest
from shared.operating_policy import OperatingPolicy


def track_offline(command: str, manifest: ModelManifest) -> None:
    """Log a finished offline command to MLflow when `MLFLOW_TRACKING_URI` is set (never fails it)."""
    from trainer_service.tracking import log_offline

    log_offline(os.environ.get("MLFLOW_TRACKING_URI"), command, manifest)


def log_line(message: str) -> None:
    """One line of an offline command's progress on stdout, with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def add_derived_artifact_arguments(p: argparse.ArgumentParser) -> None:
    """The options of a command that makes a new version out of trained ones (`refit`, `soup`)."""
    p.add_argument("--out", type=Path, required=True, help="artifact directory to create")
    p.add_argument("--version", required=True, help="the new version's name")
    p.add_argument("--data", type=Path, nargs="+", default=None,
                   help="the recipe's sources, where they are not at the paths it recorded")
    p.add_argument("--work-dir", type=Path, default=None, help="cache of decoded images (as `train` keeps)")
    p.add_argument("--threads", type=int, default=2)


def add_operating_policy_arguments(p: argparse.ArgumentParser) -> None:
    """One option per target of the operating policy (`--referral-recall`, `--referral-confidence`,
    `--uncertain-below-accuracy`, `--ood-flagged`), its default and help the policy's own."""
    for name, info in OperatingPolicy.model_fields.items():
        p.add_argument("--" + name.replace("_", "-"), type=float, default=info.default,
                       help=(info.description or "").replace("%", "%%") + " (default: %(default)s)")


def operating_policy_of(args: argparse.Namespace) -> OperatingPolicy:
    """The policy the options of `add_operating_policy_arguments` ask for. Raises ValueError naming
    a target out of its bounds."""
    try:
        asked = {name: getattr(args, name) for name in OperatingPolicy.model_fields}
        return OperatingPolicy.model_validate(asked)
    except ValidationError as error:
        raise ValueError("; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}"
                                   for e in error.errors())) from None


def begin_command(threads: int, out: Path) -> bool:
    """Set the thread pools of an offline command that writes a model artifact to `out`; False,
    with the reason on stderr, when `out` already holds one (versions are immutable)."""
    configure_threads(threads, max(1, threads // 2))
    if (out / "model.keras").exists():
        print(f"error: {out} already holds a model", file=sys.stderr)
        return False
    return True


def train_parser() -> argparse.ArgumentParser:
    """Arguments of `train`; defaults are the base model's recipe."""
    from shared.imaging import DEFAULT_POLICY, POLICIES
    from trainer_service.ml.backbones import BACKBONES
    from trainer_service.ml.training import Recipe

    d = Recipe()
    p = argparse.ArgumentParser(prog="trainer_service train",
                                description="Train a classifier on a class-per-folder dataset.")
    p.add_argument("data", type=Path, nargs="+",
                   help="class-per-folder training images, one root per source "
                        "(metadata.csv in it or its parent)")
    p.add_argument("--out", type=Path, required=True,
                   help="artifact directory to create (model.keras + manifest.json)")
    p.add_argument("--version", default=f"lite0-{dt.date.today().isoformat()}",
                   help="version name in the manifest")
    p.add_argument("--parent-version", default=None)
    p.add_argument("--backbone", choices=BACKBONES, default="efficientnet_lite0",
                   help="efficientnet_lite0 (committed ImageNet weights, offline), efficientnet_lite1 "
                        "or efficientnet_lite2 (ImageNet weights converted locally first: "
                        "models/backbones/NOTICE.md) or mobilenet_v2 "
                        "(Keras ImageNet weights, downloaded on first use: needs network)")
    p.add_argument("--random-init", action="store_true", help="do not load pretrained backbone weights")
    p.add_argument("--init-from", type=Path, default=None, metavar="ARTIFACT",
                   help="fine-tune this artifact's network further instead of starting from ImageNet "
                        "weights and a new head (its classes, backbone, input size, preprocessing and "
                        "validation split must be this run's; it becomes the parent version)")
    p.add_argument("--input-size", type=int, nargs=2, default=(160, 160), metavar=("H", "W"))
    p.add_argument("--eval-data", type=Path, nargs="*", default=[],
                   help="also evaluate on these sets (never used to fit or choose anything)")
    p.add_argument("--validation-fraction", type=float, nargs="+", default=[0.1],
                   help="held-out share of each source's lesions (one value, or one per source)")
    p.add_argument("--policy", default=DEFAULT_POLICY, choices=sorted(POLICIES), help="preprocessing policy")
    add_operating_policy_arguments(p)
    p.add_argument("--work-dir", type=Path, default=None,
                   help="decoded-image cache and checkpoints (default: OUT.work); the same command resumes")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--head-epochs", type=int, default=d.head_epochs)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--steps-per-epoch", type=int, default=d.steps_per_epoch)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--sampling-power", type=float, default=d.sampling_power)
    p.add_argument("--first-trainable", default=d.first_trainable,
                   help="first backbone layer to fine-tune ('' = all)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop fine-tuning after this long (checkpointed: the same command resumes)")
    p.add_argument("--average-last", type=int, default=d.average_last, metavar="K",
                   help="also score the mean of the last K epochs' weights, kept if it beats every "
                        "epoch (stochastic weight averaging; 0: off)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--split-seed", type=int, default=None,
                   help="seed of the validation split (default: --seed); members of an ensemble share one")
    p.add_argument("--threads", type=int, default=2)
    return p


def train_main(argv: list[str] | None = None) -> int:
    """`train`: write an artifact directory; prints progress and the validation report."""
    args = train_parser().parse_args(argv)
    if not begin_command(args.threads, args.out):
        return 2
    from trainer_service.commands.train import JobSpec, train
    from trainer_service.ml.training import Recipe

    try:
        operating = operating_policy_of(args)
        recipe = Recipe(
            batch_size=args.batch_size, head_epochs=args.head_epochs, epochs=args.epochs,
            steps_per_epoch=args.steps_per_epoch, learning_rate=args.learning_rate,
            warmup_steps=args.warmup_steps, sampling_power=args.sampling_power,
            first_trainable=args.first_trainable or None, max_minutes=args.max_minutes, seed=args.seed,
            average_last=args.average_last,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    spec = JobSpec(
        data=tuple(args.data), backbone=args.backbone, input_size=tuple(args.input_size), recipe=recipe,
        validation_fraction=tuple(args.validation_fraction), eval_data=tuple(args.eval_data),
        pretrained=not args.random_init, policy=args.policy, operating=operating,
        work_dir=args.work_dir or args.out.with_name(args.out.name + ".work"), split_seed=args.split_seed,
        init_from=args.init_from,
    )
    return train(spec, args.version, args.out, parent_version=args.parent_version)


def evaluate_parser() -> argparse.ArgumentParser:
    """Arguments of `evaluate`."""
    p = argparse.ArgumentParser(prog="trainer_service evaluate", description="Evaluate a model artifact.")
    p.add_argument("artifact", type=Path, help="directory with model.keras and manifest.json")
    p.add_argument("data", type=Path, help="class-per-folder labelled images")
    p.add_argument("--json", type=Path, default=None, help="also write the metrics here")
    p.add_argument("--part", choices=("gate", "report"), default=None,
                   help="only that half of the set's lesions: HAM10000 eval/'s report half gives the model "
                        "card's figures, its gate half judges retrains (trainer_service/ml/evidence.py)")
    p.add_argument("--threads", type=int, default=2)
    return p


def evaluate_main(argv: list[str] | None = None) -> int:
    """`evaluate`: print the metrics of an artifact on a class-per-folder set; `--json` saves them
    (`trainer_service.commands.evaluate.evaluate`)."""
    args = evaluate_parser().parse_args(argv)
    configure_threads(args.threads, max(1, args.threads // 2))
    from trainer_service.commands.evaluate import evaluate

    evaluate(args.artifact, args.data, part=args.part, json_path=args.json)
    return 0


COMMANDS = {"train": train_main, "evaluate": evaluate_main}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: python -m trainer_service.commands.cli {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        sys.exit(2)
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
