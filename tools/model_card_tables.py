"""Print the model card's evaluation tables (markdown) from `evaluate --json` and
`evaluate-ood --json` outputs, so the card's figures are the commands' figures.

    python tools/model_card_tables.py var/runs/eval-ham.json var/runs/eval-isic.json --ood var/runs/ood.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _f(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _span(interval: list[float] | None) -> str:
    return "" if interval is None else f" [{interval[0]:.2f}, {interval[1]:.2f}]"


def _auc(metrics: dict[str, Any], name: str) -> str:
    value = metrics["per_class"].get(name, {}).get("auc")
    return "-" if value is None else _f(value) + _span(metrics.get("intervals", {}).get("auc", {}).get(name))


def summary(runs: dict[str, dict[str, Any]]) -> list[str]:
    names = list(runs)
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("images", lambda m: str(m["images"])),
        ("balanced accuracy [95 % bootstrap]",
         lambda m: _f(m["balanced_accuracy"]) + _span(m.get("intervals", {}).get("balanced_accuracy"))),
        ("macro AUC (one-vs-rest)", lambda m: _f(m["macro_auc_ovr"])),
        ("melanoma AUC", lambda m: _auc(m, "melanoma")),
        ("seborrheic keratosis AUC", lambda m: _auc(m, "seborrheic_keratosis")),
        ("ECE at T = 1", lambda m: _f(m.get("ece_uncalibrated"))),
        ("ECE calibrated", lambda m: _f(m["ece"])),
        ("ECE a calibrated model would show here: median / p90",
         lambda m: "-" if "ece_calibrated_floor" not in m else
         f"{m['ece_calibrated_floor']['median']:.3f} / {m['ece_calibrated_floor']['p90']:.3f}"),
    ]
    for label, get in rows:
        lines.append(f"| {label} | " + " | ".join(get(runs[n]) for n in names) + " |")
    for name in ("melanoma", "basal_cell_carcinoma", "actinic_keratosis"):
        cells = []
        for n in names:
            row = runs[n].get("operating_points", {}).get("referral", {}).get(name)
            cells.append("-" if row is None or row["recall"] is None else
                         f"{row['recall']:.3f}{_span(row.get('recall_interval'))} / {_f(row['specificity'])} "
                         f"(>= {row['threshold']:.3f})")
        lines.append(f"| {name} referral: recall / specificity | " + " | ".join(cells) + " |")
    for key, label in (("ood_flagged", "flagged out of distribution"),):
        lines.append(f"| {label} | " + " | ".join(
            _f(runs[n].get("operating_points", {}).get(key)) for n in names) + " |")
    cells = []
    for n in names:
        u = runs[n].get("operating_points", {}).get("uncertainty")
        cells.append("-" if u is None else f"{u['coverage']:.2f} answered, "
                                           f"accuracy {_f(u['accuracy_answered'])} "
                                           f"(all: {_f(u['accuracy_all'])})")
    lines.append("| not uncertain: share, accuracy | " + " | ".join(cells) + " |")
    return lines


def per_class(name: str, metrics: dict[str, Any]) -> list[str]:
    lines = [f"**{name}**", "", "| class | recall | precision | AUC | support |", "|---|---:|---:|---:|---:|"]
    for label, row in metrics["per_class"].items():
        if row["support"]:
            lines.append(f"| {label} | {_f(row['recall'])} | {_f(row['precision'])} | {_f(row.get('auc'))} | "
                         f"{row['support']} |")
    return lines


def ood(report: dict[str, Any]) -> list[str]:
    ins = report["in_distribution"]
    lines = [f"AUROC in vs out: **{report['auroc']:.3f}**; threshold {report['threshold']:.3f}; "
             f"in-distribution images flagged: {ins['flagged']:.1%} of {ins['images']}.", "",
             "| out-of-distribution kind | images | detected | AUROC |", "|---|---:|---:|---:|"]
    for kind, row in report["out_of_distribution"].items():
        lines.append(f"| {kind} | {row['images']} | {row['detected']:.1%} | {row['auroc']:.3f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("evaluations", type=Path, nargs="+")
    p.add_argument("--ood", type=Path, default=None)
    args = p.parse_args(argv)
    runs = {path.stem: json.loads(path.read_text()) for path in args.evaluations}
    print("\n".join(summary(runs)), end="\n\n")
    for name, metrics in runs.items():
        print("\n".join(per_class(name, metrics)), end="\n\n")
    if args.ood is not None:
        print("\n".join(ood(json.loads(args.ood.read_text()))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
