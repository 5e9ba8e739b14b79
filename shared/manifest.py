"""The model manifest: the JSON that travels beside every model artifact (`manifest.json`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.verdict import GateResult

#: Preprocessing policy of manifests that name none (models made before policies had names).
PREPROCESSING = "center_crop_resize_bilinear/v1"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ReferralThreshold(BaseModel):
    """When a malignant class is flagged for referral, whatever the top label: the threshold on
    its calibrated (rolled-up) probability, chosen on validation for a recall target."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(ge=0.0, le=1.0,
                             description="Flag when the class's probability is at least this.")
    target_recall: float = Field(ge=0.0, le=1.0,
                                 description="Recall the threshold was chosen for, on validation.")
    confidence: float = Field(0.5, ge=0.5, lt=1.0,
                              description="One-sided confidence that validation recall reaches the target "
                                          "(its Wilson lower bound); 0.5: the point estimate.")
    validation_recall: dict[str, float] = Field(default_factory=dict,
                                                description="Recall reached, per source.")
    validation_specificity: dict[str, float] = Field(
        default_factory=dict, description="Share of other images not flagged, per source.")
    basis: str = Field("validation", description="Where it comes from: 'validation', or 'inherited from "
                                                 "<version>' when a retrain had too few cases to choose one.")


class OodDetector(BaseModel):
    """The model's own "is this like my training images?" test: the model's "ood" output (the
    embedding's Mahalanobis distance to the nearest class, per dimension) against a threshold."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field("mahalanobis_nearest_class/v1", description="How the score is computed.")
    dims: int = Field(description="Whitened principal directions the distance is measured in.")
    threshold: float = Field(description="Scores above this are out of distribution.")
    flagged: float = Field(
        0.01, gt=0, lt=1, description="Share of in-distribution validation images the threshold flags.")
    validation_flagged: dict[str, float] = Field(
        default_factory=dict, description="Share of held-out in-distribution images flagged, per source.")
    basis: str = Field("fitted", description="'fitted' on this version's training embeddings, or 'inherited "
                                             "from <version>' (a head-only retrain on too few images).")


class Uncertainty(BaseModel):
    """When an answer is too unsure to name one class: the top probability below `threshold`."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(ge=0.0, le=1.0,
                             description="Answers whose confidence is below this are uncertain.")
    target_accuracy: float = Field(description="Validation accuracy the answered share was held to.")
    validation_coverage: float = Field(description="Share of validation images answered (not uncertain).")
    validation_accuracy: float = Field(description="Accuracy on that share.")
    trade_off: list[dict[str, float]] = Field(
        default_factory=list, description="Coverage and accuracy of the answered share at other thresholds.")


class LiteRTArtifact(BaseModel):
    """The model converted to LiteRT when it was saved (`model.tflite` beside `model.keras`): what
    workers serve without TensorFlow. Published only if its outputs matched Keras on probe images."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field("model.tflite", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.tflite$",
                      description="Its file name, beside the Keras file (in the registry: "
                                  "models/<version>/).")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$",
                        description="SHA-256 of the file (hex); a worker loads no file that does not match.")
    parity_gap: float = Field(
        ge=0, description="Largest gap between its outputs and Keras's on the probe images: probabilities, "
                          "centred log-probabilities and the OOD score (both relative to their scale).")
    tolerance: float = Field(gt=0, description="The largest gap it was allowed (PARITY_TOLERANCE).")


class ModelManifest(BaseModel):
    """What a model artifact is, what it predicts and how it was made.

    The artifact is a Keras `.keras` file whose model takes float32 RGB pixels in [0, 255]
    of shape (batch, height, width, 3) and returns class probabilities of shape
    (batch, len(classes)); any scaling and the calibration temperature are layers inside it.
    Where `litert` names one, the same model converted to LiteRT lies beside it.
    """

    model_config = ConfigDict(extra="allow")

    schema_version: int = Field(1, description="Version of this manifest schema.")
    version: str = Field(description="Registry version name, e.g. 'base-2026-11-25' or 'v0007'.")
    classes: list[str] = Field(description="Class names in the order of the model's outputs.")
    input_size: tuple[int, int] = Field(description="Model input (height, width) in pixels.")
    preprocessing: str = Field(PREPROCESSING, description="Preprocessing policy name.")
    backbone: str = Field("unknown", description="Feature extractor, e.g. 'efficientnet_lite0'.")
    temperature: float = Field(1.0, description="Calibration temperature baked into the model.")
    created_at: dt.datetime = Field(default_factory=utcnow, description="Creation time (UTC).")
    parent_version: str | None = Field(None, description="Version this one was trained from.")
    code_version: str | None = Field(None, description="Git commit of the code that trained it.")
    training_data: dict[str, Any] = Field(
        default_factory=dict,
        description="Data snapshot: counts per class and a hash (or list) of image hashes.",
    )
    metrics: dict[str, Any] = Field(
        default_factory=dict, description="Evaluation figures on the held-out set."
    )
    parents: dict[str, str] = Field(
        default_factory=dict,
        description="Class -> the class it is a kind of (e.g. seborrheic_keratosis -> benign_keratosis), "
                    "for the classes of this model; a parent's probability includes its children's.")
    referral: dict[str, ReferralThreshold] = Field(
        default_factory=dict, description="Malignant classes flagged for referral above their threshold.")
    ood: OodDetector | None = Field(None, description="Out-of-distribution detector, when the model has one.")
    uncertainty: Uncertainty | None = Field(None, description="Confidence below which answers are uncertain.")
    backbone_version: str | None = Field(
        None, description="Version whose backbone this one shares (the key of its cached embeddings).")
    gate: GateResult | None = Field(None, description="The promotion gate's verdict on this version.")
    recipe: dict[str, Any] = Field(default_factory=dict,
                                   description="How it was trained (options, hyper-parameters).")
    history: list[dict[str, Any]] = Field(default_factory=list, description="Per-epoch training figures.")
    training_seconds: float | None = Field(None, description="Wall time of the training run.")
    tracking_url: str | None = Field(
        None,
        description="The MLflow run of the training that made it, when tracked and the UI address is set.")
    class_bias: list[float] = Field(
        default_factory=list,
        description="Per-class logit offsets fitted on validation (already in the model).")
    litert: LiteRTArtifact | None = Field(
        None, description="The model as LiteRT, converted and checked against Keras when it was saved; "
                          "None: workers serve the Keras file (TensorFlow, or a conversion of their own).")
