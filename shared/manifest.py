"""The model manifest: the JSON that travels beside every model artifact (`manifest.json`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: Name of the one preprocessing policy implemented by `shared.imaging.load_for_model`.
PREPROCESSING = "center_crop_resize_bilinear/v1"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class ModelManifest(BaseModel):
    """What a model artifact is, what it predicts and how it was made.

    The artifact is a Keras `.keras` file whose model takes float32 RGB pixels in [0, 255]
    of shape (batch, height, width, 3) and returns class probabilities of shape
    (batch, len(classes)); any scaling and the calibration temperature are layers inside it.
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
