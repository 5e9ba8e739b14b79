"""The operating policy: what a model's operating points are fitted to reach on validation.

One typed model holds the numbers and why they are what they are. The trainer's settings
(`DERMASCAN_REFERRAL_RECALL`, ...), the offline commands' options (`--referral-recall`, ...) and
the recipe a manifest records all take their defaults, descriptions and bounds from here; the
fitted points record the target they were fitted to (`ReferralThreshold.target_recall`,
`Uncertainty.target_accuracy`, `OodDetector.flagged`).

Import-light (pydantic only): settings and command-line parsers read it without loading
TensorFlow.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class OperatingPolicy(BaseModel):
    """Targets of the operating points, each with its bounds. Frozen; `OperatingPolicy()` is the
    policy the bundled model was fitted under.

    - `referral_recall` 0.80 with `referral_confidence` 0.95: a referral flag that misses one
      malignant lesion in five at most, and says so with 95 % confidence per source (the
      one-sided Wilson bound; of 90 HAM10000 melanomas that asks for 79 found, not 72), so a
      small validation set buys a lower threshold instead of a lucky one.
    - `uncertain_below_accuracy` 0.90: answers below the confidence where validation accuracy
      of the answered share reaches 90 % say "uncertain" (about half of the bundled model's
      validation images are answered).
    - `ood_flagged` 0.02: chosen for v2-lite0-224 on the seed-1 design set of
      `tools/make_ood_set.py` (1 %: 72 % of drawn pictures caught, 2 %: 95 %, 3 %: 100 %),
      never on the seed-0 set the model card reports.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    referral_recall: float = Field(
        0.80, gt=0, le=1,
        description="Recall each malignant class's referral threshold must reach on validation, with "
                    "the confidence below.")
    referral_confidence: float = Field(
        0.95, ge=0.5, lt=1,
        description="One-sided confidence of that recall: the Wilson lower bound of each source's "
                    "validation recall must reach it (0.5: the recall itself).")
    uncertain_below_accuracy: float = Field(
        0.9, gt=0, le=1,
        description="Answers are uncertain below the confidence where validation accuracy reaches this.")
    ood_flagged: float = Field(
        0.02, gt=0, lt=1,
        description="Share of validation images the out-of-distribution threshold may flag.")

    @classmethod
    def recorded(cls, recipe: Mapping[str, Any]) -> OperatingPolicy:
        """The policy a manifest's `recipe` records (as `as_recipe` writes it); a target it does not
        record is the default (recipes of before recorded the referral targets only). Raises
        pydantic.ValidationError for a recorded value out of bounds."""
        return cls.model_validate({name: recipe[name] for name in cls.model_fields if name in recipe})

    def as_recipe(self) -> dict[str, float]:
        """The policy as flat recipe entries (`referral_recall`, ...), what `recorded` reads back."""
        return self.model_dump()


def policy_field(name: str) -> Any:
    """A copy of one policy field (default, bounds, description) to declare a settings field with:
    `referral_recall: float = policy_field("referral_recall")`."""
    return copy.copy(OperatingPolicy.model_fields[name])
