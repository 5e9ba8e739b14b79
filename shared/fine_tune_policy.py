"""How much of the catalog a fine-tune retrain needs, and the one check of it.

A fine-tune changes the backbone, so it trains and is judged on the catalog's images alone: every
class it trains needs enough training images, and every malignant class it trains enough held-out
images to judge the candidate on. The numbers are the trainer's settings
(`TrainerSettings.fine_tune_policy`); the trainer sends them in its heartbeat (`ServiceStatus`),
so the gateway refuses a thin fine-tune at `POST /retrain` with the same words the trainer's job
would end with. The trainer checks again when the job runs: its settings and the catalog are the
truth then. Pure functions, thread-safe.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import Unprocessable
from shared.taxonomy import MALIGNANT

#: The error code of a fine-tune the catalog is too small for.
NOT_ENOUGH_IMAGES = "not_enough_images_to_fine_tune"


class FineTunePolicy(BaseModel):
    """The least catalog a fine-tune retrain trains on (the trainer's settings, never a caller's)."""

    model_config = ConfigDict(extra="forbid")

    min_training_images: int = Field(
        ge=1, description="Training images each class that has any needs (`DERMASCAN_FINE_TUNE_MIN_IMAGES`).")
    min_held_out_malignant: int = Field(
        ge=1, description="Held-out images each malignant class trained needs "
                          "(`DERMASCAN_GATE_MIN_CLASS_SUPPORT`).")
    unjudged_malignant_blocks: bool = Field(
        description="Whether a malignant class with fewer held-out images refuses the fine-tune "
                    "(`DERMASCAN_GATE_UNJUDGED_MALIGNANT_BLOCKS`); when false only training images count.")


def shortfall(trained: Counter[str], judged: Counter[str], classes: Iterable[str],
              policy: FineTunePolicy) -> Unprocessable | None:
    """The refusal (422, `not_enough_images_to_fine_tune`, naming each class that is too thin and
    its count) of a fine-tune whose catalog holds `trained` training images and `judged` held-out
    images per label, training `classes`; None when the catalog is enough.

    A class counts as trained when it has training images; a malignant class of `classes` needs
    held-out images whether or not it has training images (the served model already predicts it)."""
    thin = [f"{c}: {trained[c]} training images" for c in sorted(trained)
            if 0 < trained[c] < policy.min_training_images]
    thin += [f"{c}: {judged[c]} held-out images" for c in classes if policy.unjudged_malignant_blocks
             and c in MALIGNANT and judged[c] < policy.min_held_out_malignant]
    if not thin and sum(trained.values()) > 0:
        return None
    return Unprocessable(
        "fine-tuning changes the backbone, so it trains and is judged on the catalog's images alone, "
        f"and the catalog holds too few (need {policy.min_training_images} training images a class "
        f"and {policy.min_held_out_malignant} held-out images of each malignant class): "
        + ("; ".join(thin) or "no training images") + ". Retrain the head only, or upload more images.",
        code=NOT_ENOUGH_IMAGES)


def check(trained: Counter[str], judged: Counter[str], classes: Iterable[str],
          policy: FineTunePolicy) -> None:
    """Raise `shortfall`'s refusal, if there is one."""
    refusal = shortfall(trained, judged, classes, policy)
    if refusal is not None:
        raise refusal
