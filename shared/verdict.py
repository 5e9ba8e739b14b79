"""The promotion gate's verdict as data: what the trainer writes into a job result and a model
version's manifest, and the gateway and UI show."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Judgement = Literal["better", "worse", "within noise", "not enough data"]


class GatePolicy(BaseModel):
    """The operator's gate policy (trainer settings, never a request), recorded with each verdict."""

    model_config = ConfigDict(extra="forbid")

    max_balanced_accuracy_drop: float = Field(
        description="A drop in balanced accuracy beyond its noise and this margin rejects.")
    max_class_recall_drop: float = Field(description="The same for a benign class's recall.")
    malignant_max_recall_drop: float = Field(
        description="The same for a malignant class's recall (0: may not fall).")
    malignant: list[str] = Field(description="Classes judged as malignant.")
    min_class_support: int = Field(description="Held-out images a class needs before its recall is judged.")
    accept_benign_for_malignant: bool = Field(
        description="Accept a benign class's drop when a malignant class's recall rose beyond its noise.")
    confidence: float = Field(description="Confidence level of the bootstrap intervals.")
    resamples: int = Field(description="Paired bootstrap resamples.")


class Interval(BaseModel):
    """A paired difference (candidate - current) with its bootstrap confidence interval."""

    model_config = ConfigDict(extra="forbid")

    difference: float = Field(description="Observed candidate - current.")
    low: float = Field(description="Lower bound of the interval.")
    high: float = Field(description="Upper bound of the interval.")


class ClassVerdict(BaseModel):
    """One class's recall, candidate against current, on the same held-out images."""

    model_config = ConfigDict(extra="forbid")

    label: str
    support: int = Field(description="Held-out images of this class.")
    malignant: bool
    current_recall: float | None = Field(description="None when the current model lacks the class.")
    candidate_recall: float
    change: Interval | None = Field(description="Paired recall difference; None when it cannot be compared.")
    judgement: Judgement


class GateResult(BaseModel):
    """The gate's decision, the figures behind it, and the policy it applied."""

    model_config = ConfigDict(extra="forbid")

    passed: bool
    reasons: list[str] = Field(description="Why, in words: each drop that rejected, each trade accepted.")
    candidate_balanced_accuracy: float
    current_balanced_accuracy: float | None
    balanced_accuracy_change: Interval | None = None
    classes: list[ClassVerdict] = Field(default_factory=list)
    policy: GatePolicy | None = None
