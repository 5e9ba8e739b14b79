"""The operating policy: one typed model for the targets every operating point is fitted to."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from shared.operating_policy import OperatingPolicy, policy_field


def test_the_default_policy_is_the_bundled_models() -> None:
    policy = OperatingPolicy()
    assert (policy.referral_recall, policy.referral_confidence) == (0.80, 0.95)
    assert (policy.uncertain_below_accuracy, policy.ood_flagged) == (0.9, 0.02)


@pytest.mark.parametrize("field, value", [("referral_recall", 0.0), ("referral_recall", 1.2),
                                          ("referral_confidence", 0.4), ("referral_confidence", 1.0),
                                          ("uncertain_below_accuracy", 0.0), ("ood_flagged", 1.0)])
def test_a_target_out_of_its_bounds_is_refused_naming_it(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        OperatingPolicy.model_validate({field: value})


def test_a_recipe_records_the_policy_and_gives_it_back() -> None:
    policy = OperatingPolicy(referral_recall=0.85, ood_flagged=0.03)
    recipe = {"seed": 0, **policy.as_recipe()}
    assert OperatingPolicy.recorded(recipe) == policy


def test_a_recipe_of_before_gives_the_defaults_for_what_it_did_not_record() -> None:
    recorded = OperatingPolicy.recorded({"referral_recall": 0.8, "referral_confidence": 0.5, "seed": 3})
    assert recorded == OperatingPolicy(referral_confidence=0.5)
    with pytest.raises(ValidationError, match="referral_confidence"):
        OperatingPolicy.recorded({"referral_confidence": 0.2})


def test_a_field_declared_from_the_policy_keeps_its_default_bounds_and_description() -> None:
    class Settings(BaseModel):
        referral_recall: float = policy_field("referral_recall")

    assert Settings().referral_recall == 0.80
    assert Settings.model_fields["referral_recall"].description == \
        OperatingPolicy.model_fields["referral_recall"].description
    with pytest.raises(ValidationError, match="referral_recall"):
        Settings(referral_recall=1.5)
