"""Training on two sources: one class list, per-source validation, strata balanced, labels as sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from shared.taxonomy import admissible
from trainer_service.ml.pipeline import set_cross_entropy, strata_sampling
from trainer_service.ml.sources import combined, load_sources, source_name

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_two_sources_share_one_class_list(tmp_path: Path) -> None:
    roots = [FIXTURES / "ham10000", FIXTURES / "isic2017"]
    classes, sources = load_sources(roots, (32, 32), policy="resize_bilinear_shades_of_gray/v2",
                                    fractions=[0.25, 0.25], seed=0, cache_dir=tmp_path)
    assert "seborrheic_keratosis" in classes and "dermatofibroma" in classes
    assert [s.name for s in sources] == ["ham10000", "isic2017"]
    ham, isic = sources
    assert ham.fit.counts()["seborrheic_keratosis"] == 0 and isic.fit.counts()["dermatofibroma"] == 0
    assert not set(ham.fit.groups) & set(ham.validation.groups)  # lesions stay on one side
    train, strata = combined(sources)
    assert len(train.files) == len(ham.fit.files) + len(isic.fit.files)
    assert set(strata[len(ham.fit.files):] // len(classes)) == {1}
    # the second load comes from the decoded cache, pixel for pixel
    again = load_sources(roots, (32, 32), policy="resize_bilinear_shades_of_gray/v2",
                         fractions=[0.25], seed=0, cache_dir=tmp_path)[1]
    np.testing.assert_array_equal(again[1].fit.images, isic.fit.images)
    assert len(list(tmp_path.glob("*.npy"))) == 2


def test_source_names_come_from_the_folder_above_a_split() -> None:
    assert source_name(Path("/data/ham10000/train")) == "ham10000"
    assert source_name(Path("/data/isic2017")) == "isic2017"


def test_strata_weights_balance_classes_then_sources() -> None:
    # class 0 in two sources (900 and 100 images), class 1 in one (50)
    labels = np.array([0] * 900 + [0] * 100 + [1] * 50)
    strata = np.array([0] * 900 + [2] * 100 + [1] * 50)
    probs, weights = strata_sampling(labels, strata, 3, power=0.5)
    share = probs * weights
    assert share[0] + share[2] == pytest.approx(share[1])  # classes carry equal loss
    assert share[0] == pytest.approx(share[2])  # and a class's sources share it equally
    assert share.sum() == pytest.approx(1.0)


def test_a_parent_label_is_no_evidence_against_its_child() -> None:
    classes = ("benign_keratosis", "melanoma", "seborrheic_keratosis")
    loss = set_cross_entropy(admissible(classes))
    says_sk = tf.constant([[0.05, 0.05, 0.9]])
    says_mel = tf.constant([[0.05, 0.9, 0.05]])
    bkl, sk = tf.constant([0]), tf.constant([2])
    assert float(loss(bkl, says_sk)[0]) == pytest.approx(-np.log(0.95), rel=1e-4)  # bkl admits sk
    assert float(loss(bkl, says_mel)[0]) > 2.0
    assert float(loss(sk, tf.constant([[0.9, 0.05, 0.05]]))[0]) > 2.0  # an SK is not "other bkl"
    identity = set_cross_entropy(np.eye(3))
    expected = tf.keras.losses.sparse_categorical_crossentropy(bkl, says_sk)
    assert float(identity(bkl, says_sk)[0]) == pytest.approx(float(expected[0]), rel=1e-4)
