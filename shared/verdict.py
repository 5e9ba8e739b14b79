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
    unjudged_malignant_blocks: bool = Field(
        True, description="A malignant class no held-out set can judge blocks automatic promotion.")
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
    """One class's recall, candidate against current, on the same held-out images. A malignant
    class is also judged on what a clinician gets: the answer names it *or* flags it for referral
    ("caught"), with what the flag costs the other classes' images (specificity)."""

    model_config = ConfigDict(extra="forbid")

    label: str
    support: int = Field(description="Held-out images of this class.")
    sources: dict[str, int] = Field(default_factory=dict, description="Those images per source.")
    malignant: bool
    current_recall: float | None = Field(description="None when the current model lacks the class.")
    candidate_recall: float
    change: Interval | None = Field(description="Paired recall difference; None when it cannot be compared.")
    current_caught: float | None = Field(
        None, description="Malignant: share named or flagged, current model.")
    candidate_caught: float | None = Field(None, description="Malignant: share named or flagged, candidate.")
    caught_change: Interval | None = Field(None, description="Malignant: paired difference of that share.")
    current_specificity: float | None = Field(
        None,
        description="Malignant: share of the other classes' images neither named nor flagged as it, current.")
    candidate_specificity: float | None = Field(None, description="The same, candidate.")
    judgement: Judgement


class GateSet(BaseModel):
    """The comparison on one held-out set (the lineage's reference images, the catalog's own
    held-out uploads), reported apart from the others."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="'reference' or 'uploads'.")
    description: str = Field(description="What the images are and where they come from.")
    images: int = Field(description="Images judged on.")
    sources: dict[str, int] = Field(default_factory=dict, description="Images per source.")
    reasons: list[str] = Field(default_factory=list, description="What rejected on this set.")
    candidate_balanced_accuracy: float
    current_balanced_accuracy: float | None
    balanced_accuracy_change: Interval | None = None
    classes: list[ClassVerdict] = Field(default_factory=list)


class GateResult(BaseModel):
    """The gate's decision, the figures behind it, and the policy it applied. The top-level
    figures are the first set's (the reference set); `sets` holds every set apart."""

    model_config = ConfigDict(extra="forbid")

    passed: bool
    reasons: list[str] = Field(description="Why, in words: each drop that rejected, each trade accepted.")
    candidate_balanced_accuracy: float
    current_balanced_accuracy: float | None
    balanced_accuracy_change: Interval | None = None
    classes: list[ClassVerdict] = Field(default_factory=list)
    policy: GatePolicy | None = None
    sets: list[GateSet] = Field(default_factory=list, description="Every held-out set judged on, apart.")
    unjudged: list[str] = Field(
        default_factory=list,
        description="Malignant classes no set had enough images to judge: they block automatic promotion.")
