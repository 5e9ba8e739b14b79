"""`python -m trainer_service evaluate-ood ARTIFACT --in DIR... --out DIR...`: how well the model's
out-of-distribution detector separates its own kind of images from others.

Images are found recursively. Out-of-distribution images are reported per kind (the first folder
level under each `--out` root, e.g. photos/, faces/, drawn/). Prints AUROC (in = negative,
out = positive), the share of in-distribution images flagged at the manifest's threshold and the
share of each kind detected; `--json` saves them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from shared.imaging import load_for_model
from trainer_service.ml.dataset import IMAGE_SUFFIXES


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _kind(root: Path, path: Path) -> str:
    parts = path.relative_to(root).parts
    return f"{root.name}/{parts[0]}" if len(parts) > 1 else root.name


def ood_report(artifact: Path, inside: list[Path], outside: list[Path]) -> dict[str, Any]:
    """The figures described in the module doc. Raises ValueError if the model has no detector."""
    from trainer_service.ml.artifacts import load_artifact
    from trainer_service.ml.evaluation import predict

    model, manifest = load_artifact(artifact)
    if manifest.ood is None or not isinstance(model.output, (list, tuple)):
        raise ValueError(f"model {manifest.version} has no out-of-distribution detector")

    def scores(paths: list[Path]) -> np.ndarray:
        pixels = np.stack([load_for_model(p.read_bytes(), manifest.input_size,
                                          policy=manifest.preprocessing)
                           for p in paths])
        return predict(model, pixels, output=1).reshape(-1)

    threshold = manifest.ood.threshold
    in_scores = np.concatenate([scores(_images(root)) for root in inside])
    kinds: dict[str, list[Path]] = {}
    for root in outside:
        for path in _images(root):
            kinds.setdefault(_kind(root, path), []).append(path)
    out_by_kind = {kind: scores(paths) for kind, paths in kinds.items()}
    out_scores = np.concatenate(list(out_by_kind.values()))
    labels = np.concatenate([np.zeros(len(in_scores)), np.ones(len(out_scores))])
    return {
        "model_version": manifest.version,
        "threshold": threshold,
        "in_distribution": {"images": len(in_scores), "flagged": float((in_scores > threshold).mean()),
                            "median_score": float(np.median(in_scores))},
        "auroc": float(roc_auc_score(labels, np.concatenate([in_scores, out_scores]))),
        "out_of_distribution": {
            kind: {"images": len(s), "detected": float((s > threshold).mean()),
                   "auroc": float(roc_auc_score(np.r_[np.zeros(len(in_scores)), np.ones(len(s))],
                                                np.r_[in_scores, s])),
                   "median_score": float(np.median(s))}
            for kind, s in out_by_kind.items()},
    }


def main(argv: list[str] | None = None) -> int:
    """The command; see the module doc."""
    p = argparse.ArgumentParser(prog="trainer_service evaluate-ood", description=__doc__.split("\n\n")[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--in", dest="inside", type=Path, nargs="+", required=True,
                   help="in-distribution image folders")
    p.add_argument("--out", dest="outside", type=Path, nargs="+", required=True,
                   help="out-of-distribution folders")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    report = ood_report(args.artifact, args.inside, args.outside)
    ins = report["in_distribution"]
    print(f"model {report['model_version']}: threshold {report['threshold']:.3f}, "
          f"AUROC {report['auroc']:.4f}")
    print(f"in-distribution: {ins['images']} images, {ins['flagged']:.1%} flagged")
    for kind, row in report["out_of_distribution"].items():
        print(f"  {kind:<24} {row['images']:>5} images  detected {row['detected']:6.1%}  "
              f"AUROC {row['auroc']:.4f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0
