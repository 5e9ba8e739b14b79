"""The promotion gate: a new model is served only if it is not worse on the held-out set."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class GateResult(BaseModel):
    """The gate's decision and the figures behind it."""

    passed: bool
    reasons: list[str]
    candidate_balanced_accuracy: float
    current_balanced_accuracy: float | None
    recall_drops: dict[str, float]


def apply_gate(candidate: dict[str, Any], current: dict[str, Any] | None, *,
               max_balanced_accuracy_drop: float, max_class_recall_drop: float) -> GateResult:
    """Compare `classification_metrics` of the candidate and the current model on the same
    held-out set. Fails when balanced accuracy falls by more than its margin, or any class's
    recall by more than its margin. With no current model, it passes."""
    new_bacc = float(candidate["balanced_accuracy"])
    if current is None:
        return GateResult(passed=True, reasons=["no current model to compare with"],
                          candidate_balanced_accuracy=new_bacc, current_balanced_accuracy=None,
                          recall_drops={})
    old_bacc = float(current["balanced_accuracy"])
    reasons = []
    if new_bacc < old_bacc - max_balanced_accuracy_drop:
        reasons.append(f"balanced accuracy {new_bacc:.4f} is below the current {old_bacc:.4f} "
                       f"by more than {max_balanced_accuracy_drop:.4f}")
    drops: dict[str, float] = {}
    for name, row in candidate["per_class"].items():
        before = current["per_class"].get(name, {}).get("recall")
        after = row.get("recall")
        if before is None or after is None:
            continue
        drops[name] = round(before - after, 4)
        if before - after > max_class_recall_drop:
            reasons.append(f"recall of {name} fell from {before:.3f} to {after:.3f} "
                           f"(more than {max_class_recall_drop:.3f})")
    return GateResult(passed=not reasons, reasons=reasons or ["not worse than the current model"],
                      candidate_balanced_accuracy=new_bacc, current_balanced_accuracy=old_bacc,
                      recall_drops=drops)
