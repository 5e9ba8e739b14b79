"""The one check of a fine-tune's catalog (shared/fine_tune_policy.py), which the trainer's job
and the gateway's `POST /retrain` both make: which classes are too thin, and the words."""

from __future__ import annotations

from collections import Counter

import pytest

from shared.errors import Unprocessable
from shared.fine_tune_policy import NOT_ENOUGH_IMAGES, FineTunePolicy, check, shortfall

POLICY = FineTunePolicy(min_training_images=3, min_held_out_malignant=2, unjudged_malignant_blocks=True)
CLASSES = ["melanocytic_nevi", "melanoma", "vascular_lesion"]


def test_a_catalog_with_enough_of_every_class_passes() -> None:
    trained = Counter({"melanocytic_nevi": 3, "melanoma": 5, "vascular_lesion": 3})
    assert shortfall(trained, Counter({"melanoma": 2}), CLASSES, POLICY) is None
    check(trained, Counter({"melanoma": 2}), CLASSES, POLICY)


def test_each_thin_class_is_named_with_its_count_and_what_it_lacks() -> None:
    trained = Counter({"melanocytic_nevi": 2, "melanoma": 5, "vascular_lesion": 3})
    refusal = shortfall(trained, Counter({"melanoma": 1, "melanocytic_nevi": 9}), CLASSES, POLICY)
    assert isinstance(refusal, Unprocessable) and refusal.status == 422 and refusal.code == NOT_ENOUGH_IMAGES
    assert "need 3 training images a class and 2 held-out images of each malignant class" in refusal.message
    thin = refusal.message.split("): ", 1)[1].split(". Retrain", 1)[0]
    assert thin == "melanocytic_nevi: 2 training images; melanoma: 1 held-out images"
    with pytest.raises(Unprocessable) as raised:
        check(trained, Counter({"melanoma": 1}), CLASSES, POLICY)
    assert raised.value.message == refusal.message


def test_a_malignant_class_the_model_predicts_needs_held_out_images_even_without_training_images() -> None:
    classes = ["basal_cell_carcinoma", *CLASSES]  # the served model's, not in the catalog
    trained = Counter({"melanocytic_nevi": 3, "melanoma": 3, "vascular_lesion": 3})
    refusal = shortfall(trained, Counter({"melanoma": 2}), classes, POLICY)
    assert refusal is not None and "basal_cell_carcinoma: 0 held-out images" in refusal.message
    assert "basal_cell_carcinoma: 0 training images" not in refusal.message  # it trains none of it


def test_with_unjudged_malignant_classes_allowed_only_training_images_count() -> None:
    lenient = POLICY.model_copy(update={"unjudged_malignant_blocks": False})
    trained = Counter({"melanocytic_nevi": 3, "melanoma": 3})
    assert shortfall(trained, Counter(), CLASSES, lenient) is None
    refusal = shortfall(trained + Counter({"vascular_lesion": 1}), Counter(), CLASSES, lenient)
    assert refusal is not None and "vascular_lesion: 1 training images" in refusal.message
    assert "held-out" not in refusal.message.split("): ", 1)[1]


def test_no_training_images_is_refused_however_lenient_the_policy() -> None:
    lenient = FineTunePolicy(min_training_images=1, min_held_out_malignant=1, unjudged_malignant_blocks=False)
    refusal = shortfall(Counter(), Counter({"melanoma": 40}), CLASSES, lenient)
    assert refusal is not None and "no training images" in refusal.message
