"""`python -m trainer_service soup ARTIFACT ARTIFACT [...] --out DIR --version NAME`: one network
whose weights are the mean of several trained ones (a greedy model soup: Wortsman et al., "Model
soups", ICML 2022, arXiv:2203.05482), made a model version as `train` makes one.

The ingredients must share a lineage (`train.lineage`: classes, backbone, input size,
preprocessing and validation split), as the versions down one `train --init-from` path do, so no
ingredient was trained on an image of the others' validation part. Greedy: the ingredients are
ranked by their validation selection score (the one `train` picks epochs by), the soup starts as
the best, and each next one goes in only if the mean with it scores at least as well as without.
The soup's operating points and out-of-distribution detector are then fitted on that validation
split (`train.finish`), to the operating policy the first ingredient's recipe records;
`--eval-data` sets are only measured. Serving it costs what one of the ingredients costs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from shared.manifest import ModelManifest
from shared.operating_policy import OperatingPolicy
from shared.taxonomy import admissible
from trainer_service.commands.cli import (
    add_derived_artifact_arguments,
    begin_command,
    log_line,
    track_offline,
)
from trainer_service.commands.refit import recipe_sources
from trainer_service.commands.train import (
    JobSpec,
    bare_network,
    finish,
    lineage,
    lineage_mismatches,
    selection_scorer,
)
from trainer_service.ml.artifacts import load_artifact, save_artifact
from trainer_service.ml.sources import combined
from trainer_service.ml.training import Log

Weights = list[np.ndarray]


def mean_weights(members: list[Weights]) -> Weights:
    """The element-wise mean of several networks' weight lists (same architecture)."""
    return [np.mean([np.asarray(m[i], np.float64) for m in members], axis=0).astype(np.asarray(first).dtype)
            for i, first in enumerate(members[0])]


def greedy_soup(ranked: list[Weights], score: Callable[[Weights], float], log: Log, *,
                first_score: float | None = None) -> tuple[list[int], float]:
    """(indices of the ingredients kept, the soup's score): `ranked` best first; each next
    ingredient is kept if the mean with it scores at least the soup's score without it.
    `first_score`: the first ingredient's score where the caller has it already."""
    kept, best = [0], score(ranked[0]) if first_score is None else first_score
    for i in range(1, len(ranked)):
        value = score(mean_weights([ranked[k] for k in [*kept, i]]))
        log(f"soup {[*kept, i]}: score {value:.4f} ({'kept' if value >= best else 'left out'}, "
            f"soup so far {best:.4f})")
        if value >= best:
            kept, best = [*kept, i], value
    return kept, best


def soup(artifacts: list[Path], version: str, log: Log, *, eval_data: tuple[Path, ...] = (),
         data: list[Path] | None = None, cache_dir: Path | None = None) -> tuple[keras.Model, ModelManifest]:
    """The greedy soup of `artifacts` as a calibrated model and its manifest (see module doc).

    Raises ValueError when the artifacts' lineages differ or their recipe does not say how it
    was split.
    """
    started = time.monotonic()
    loaded = [load_artifact(path) for path in artifacts]
    first = loaded[0][1]
    for _, manifest in loaded[1:]:
        mismatches = lineage_mismatches(lineage(first), lineage(manifest))
        if mismatches:
            raise ValueError(f"cannot average {manifest.version} with {first.version}: "
                             + "; ".join(mismatches))
    classes, sources = recipe_sources(first, data=data, cache_dir=cache_dir)
    networks = [bare_network(model, manifest) for model, manifest in loaded]
    scorer = selection_scorer(sources, admissible(classes), classes)
    soup_network = networks[0]

    def score(weights: Weights) -> float:
        soup_network.set_weights(weights)
        return scorer(soup_network)[0]

    members = [n.get_weights() for n in networks]
    alone = [score(w) for w in members]
    order = sorted(range(len(members)), key=lambda i: -alone[i])
    for i in order:
        log(f"ingredient {loaded[i][1].version}: validation score {alone[i]:.4f}")
    kept, value = greedy_soup([members[i] for i in order], score, log, first_score=alone[order[0]])
    chosen = [order[k] for k in kept]
    soup_network.set_weights(mean_weights([members[i] for i in chosen]))
    versions = [loaded[i][1].version for i in chosen]
    log(f"soup of {versions}: validation score {value:.4f}")

    operating = OperatingPolicy.recorded(first.recipe)  # the first ingredient's targets
    recipe: dict[str, Any] = {
        "kind": "soup", "ingredients": versions, "tried": [loaded[i][1].version for i in order],
        "sources": first.recipe["sources"], "validation_fraction": first.recipe["validation_fraction"],
        "split_seed": first.recipe.get("split_seed"), "seed": first.recipe.get("seed", 0),
        **operating.as_recipe()}
    spec = JobSpec(data=tuple(Path(p) for p in recipe["sources"]), backbone=first.backbone,
                   input_size=first.input_size, validation_fraction=tuple(recipe["validation_fraction"]),
                   eval_data=eval_data, policy=first.preprocessing, operating=operating)
    history = [{"ingredient": loaded[i][1].version, "score": alone[i]} for i in order]
    history.append({"soup": versions, "score": value})
    return finish(soup_network, spec, version, classes, sources, combined(sources)[0], log, recipe=recipe,
                  history=history, parent_version=versions[0], started=started)


def parser() -> argparse.ArgumentParser:
    """The command line of `python -m trainer_service soup`."""
    p = argparse.ArgumentParser(prog="python -m trainer_service soup", description=__doc__.split("\n")[0])
    p.add_argument("artifacts", type=Path, nargs="+", help="model directories of one lineage")
    add_derived_artifact_arguments(p)
    p.add_argument("--eval-data", type=Path, nargs="*", default=[],
                   help="also evaluate on these sets (never used to fit or choose anything)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not begin_command(args.threads, args.out):
        return 2
    try:
        model, manifest = soup(args.artifacts, args.version, log_line, eval_data=tuple(args.eval_data),
                               data=args.data, cache_dir=args.work_dir / "decoded" if args.work_dir else None)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    save_artifact(model, manifest, args.out)
    track_offline("soup", manifest)
    log_line(f"wrote {args.out}")
    return 0
