"""The trainer's settings: the operating policy's targets are declared once, in shared/."""

from __future__ import annotations

import pytest

from shared.operating_policy import OperatingPolicy
from trainer_service.settings import TrainerSettings


def test_the_settings_default_to_the_operating_policy_and_carry_its_descriptions() -> None:
    assert TrainerSettings().operating_policy() == OperatingPolicy()
    for name in ("referral_recall", "referral_confidence", "uncertain_below_accuracy"):
        policy_field = OperatingPolicy.model_fields[name]
        assert TrainerSettings.model_fields[name].description == policy_field.description


def test_an_operator_s_target_reaches_the_policy_retrains_fit_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERMASCAN_REFERRAL_RECALL", "0.9")
    monkeypatch.setenv("DERMASCAN_UNCERTAIN_BELOW_ACCURACY", "0.85")
    assert TrainerSettings().operating_policy() == OperatingPolicy(referral_recall=0.9,
                                                                   uncertain_below_accuracy=0.85)


def test_a_target_out_of_the_policy_s_bounds_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERMASCAN_REFERRAL_CONFIDENCE", "0.3")
    with pytest.raises(ValueError, match="referral_confidence"):
        TrainerSettings()
