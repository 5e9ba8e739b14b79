"""Dataset loading: classes from folders, shared preprocessing, lesion-grouped splits, hashes."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

import shared.imaging
import trainer_service.ml.dataset
from trainer_service.ml.dataset import ImageSet, data_summary, find_classes, grouped_split, load_image_set

HAM = ("actinic_keratosis", "basal_cell_carcinoma", "benign_keratosis", "dermatofibroma",
       "melanocytic_nevi", "melanoma", "vascular_lesion")


def test_classes_are_the_sorted_folders(ham_root: Path, ham_small: ImageSet) -> None:
    assert find_classes(ham_root) == HAM
    assert ham_small.classes == HAM
    assert ham_small.counts() == {name: 4 for name in HAM}
    assert ham_small.images.shape == (28, 32, 32, 3) and ham_small.images.dtype == np.uint8


def test_trainer_and_worker_preprocess_identically(ham_root: Path, ham_small: ImageSet) -> None:
    import inference_worker.service

    # the very function, as each module imported it (a name neither module re-exports)
    assert vars(trainer_service.ml.dataset)["load_for_model"] is shared.imaging.load_for_model
    assert vars(inference_worker.service)["load_for_model"] is shared.imaging.load_for_model
    for i in (0, 13, 27):
        data = (ham_root / ham_small.files[i]).read_bytes()
        np.testing.assert_array_equal(ham_small.images[i], shared.imaging.load_for_model(data, (32, 32)))
        assert ham_small.sha256[i] == hashlib.sha256(data).hexdigest()


def test_lesion_ids_come_from_metadata(ham_small: ImageSet) -> None:
    assert all(g.startswith("HAM_") for g in ham_small.groups)


def test_grouped_split_never_puts_a_lesion_on_both_sides(ham_small: ImageSet) -> None:
    # Give pairs of images the same lesion so grouping matters.
    groups = tuple(f"L{i // 2}" for i in range(len(ham_small.files)))
    data = ImageSet(ham_small.images, ham_small.labels, ham_small.classes, ham_small.files, ham_small.sha256,
                    groups)
    train, held = grouped_split(data, 0.5, seed=3)
    assert len(train) + len(held) == 28 and len(set(train) & set(held)) == 0
    train_groups = {groups[i] for i in train}
    assert train_groups.isdisjoint(groups[i] for i in held)
    for label in range(len(HAM)):  # each class keeps examples on both sides
        assert (data.labels[train] == label).any() and (data.labels[held] == label).any()
    again = grouped_split(data, 0.5, seed=3)
    np.testing.assert_array_equal(train, again[0])


def test_model_classes_fix_label_order_and_missing_folders(tmp_path: Path, ham_root: Path) -> None:
    shutil.copytree(ham_root / "melanoma", tmp_path / "melanoma")
    shutil.copytree(ham_root / "dermatofibroma", tmp_path / "dermatofibroma")
    data = load_image_set(tmp_path, (32, 32), classes=HAM)
    assert data.classes == HAM
    assert set(data.labels.tolist()) == {HAM.index("melanoma"), HAM.index("dermatofibroma")}
    assert data.groups[0] == Path(data.files[0]).stem  # no metadata.csv: each image its own group


def test_summary_hash_depends_on_content_not_order(ham_small: ImageSet) -> None:
    summary = data_summary(ham_small)
    assert summary["images"] == 28
    reordered = ham_small.subset(np.arange(28)[::-1])
    assert data_summary(reordered)["images_sha256"] == summary["images_sha256"]
    assert data_summary(ham_small.subset(np.arange(27)))["images_sha256"] != summary["images_sha256"]


def test_missing_dataset_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        find_classes(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        find_classes(tmp_path)
