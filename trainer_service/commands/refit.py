"""`python -m trainer_service refit ARTIFACT --out DIR --version NAME`: a trained model's operating
points chosen again, on its own validation split, under today's rules.

The network is not touched: the class biases baked into its logits layer are taken out, and the
biases, temperature, referral thresholds and uncertainty threshold are fitted anew
(`fit_operating_points`) on the validation part of the sources its recipe names (same fractions,
same split seed, so no image it was trained on is used). The out-of-distribution branch is carried
over unchanged and its threshold set again on the same validation images. The targets are today's
operating policy (`shared.operating_policy`), or what `--referral-recall`, `--ood-flagged`... ask.
The result is a new version (versions are immutable) whose parent is the old one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import keras

from shared.manifest import ModelManifest, utcnow
from shared.operating_policy import OperatingPolicy
from trainer_service.commands.cli import (
    add_derived_artifact_arguments,
    add_operating_policy_arguments,
    begin_command,
    log_line,
    operating_policy_of,
    track_offline,
)
from trainer_service.commands.train import detector_on_validation, fit_operating_points
from trainer_service.ml.artifacts import code_version, load_artifact, save_artifact
from trainer_service.ml.network import without_class_bias
from trainer_service.ml.ood import ood_of, with_ood_output
from trainer_service.ml.sources import Source, load_sources, recorded_split_seed
from trainer_service.ml.training import Log


def recipe_sources(manifest: ModelManifest, *, data: list[Path] | None = None,
                   cache_dir: Path | None = None) -> tuple[tuple[str, ...], list[Source]]:
    """The sources a model's recipe trained on, split as it split them (same fractions, same
    seed), so their `validation` parts hold no image it was trained on; `data` stands in for
    the recorded paths. Raises ValueError when the recipe does not say how it was split or the
    data's classes are not the model's."""
    recipe = manifest.recipe
    if "validation_fraction" not in recipe or not (data or recipe.get("sources")):
        raise ValueError(f"{manifest.version}: the recipe does not name its sources and validation split")
    roots = data or [Path(p) for p in recipe["sources"]]
    classes, sources = load_sources(roots, manifest.input_size, policy=manifest.preprocessing,
                                    fractions=list(recipe["validation_fraction"]),
                                    seed=recorded_split_seed(recipe),
                                    cache_dir=cache_dir)
    if list(classes) != manifest.classes:
        raise ValueError(f"the data's classes {list(classes)} are not the model's {manifest.classes}")
    return classes, sources


def refit(artifact: Path, version: str, log: Log, *, operating: OperatingPolicy,
          data: list[Path] | None = None, cache_dir: Path | None = None) -> tuple[keras.Model, ModelManifest]:
    """The model of `artifact` with operating points fitted again on its recipe's validation split,
    to the targets of `operating`.

    Raises ValueError when the recipe does not say how it was split, or the data's classes are
    not the model's.
    """
    started = time.monotonic()
    model, manifest = load_artifact(artifact)
    recipe = manifest.recipe
    classes, sources = recipe_sources(manifest, data=data, cache_dir=cache_dir)
    for s in sources:
        log(f"validation {s.name}: {len(s.validation.files)} images")

    network = without_class_bias(model, manifest.class_bias)
    calibrated, points = fit_operating_points(network, sources, classes, operating, log)
    detector, ood = ood_of(model), manifest.ood
    if detector is not None:
        ood = detector_on_validation(calibrated, detector, sources, log, flagged=operating.ood_flagged)
        if manifest.ood is not None:
            ood = ood.model_copy(update={"method": manifest.ood.method})
        calibrated = with_ood_output(calibrated, detector)

    refitted = manifest.model_copy(update={
        "version": version,
        "parent_version": manifest.version,
        "created_at": utcnow(),
        "code_version": code_version(),
        "temperature": points["temperature"],
        "class_bias": points["class_bias"],
        "referral": points["referral"],
        "uncertainty": points["uncertainty"],
        "ood": ood,
        "metrics": {"validation": points["validation"]},  # eval figures belong to the old points
        "recipe": {**recipe, **operating.as_recipe(), "operating_points_refit_from": manifest.version},
        "training_seconds": manifest.training_seconds,
    })
    log(f"refit in {time.monotonic() - started:.0f}s")
    return calibrated, refitted


def parser() -> argparse.ArgumentParser:
    """The command line of `python -m trainer_service refit`."""
    p = argparse.ArgumentParser(prog="python -m trainer_service refit", description=__doc__.split("\n")[0])
    p.add_argument("artifact", type=Path, help="directory with model.keras and manifest.json")
    add_derived_artifact_arguments(p)
    add_operating_policy_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        operating = operating_policy_of(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not begin_command(args.threads, args.out):
        return 2
    model, manifest = refit(args.artifact, args.version, log_line, operating=operating, data=args.data,
                            cache_dir=args.work_dir / "decoded" if args.work_dir else None)
    save_artifact(model, manifest, args.out)
    track_offline("refit", manifest)
    log_line(f"wrote {args.out}")
    return 0
