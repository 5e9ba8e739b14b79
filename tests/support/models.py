"""A tiny real Keras classifier for tests that need a model but not a good one."""

from __future__ import annotations

from pathlib import Path

from shared.manifest import ModelManifest


def make_tiny_model(directory: Path, *, version: str = "tiny-v1",
                    classes: tuple[str, ...] = ("melanoma", "melanocytic_nevi", "benign_keratosis"),
                    input_size: tuple[int, int] = (32, 32), seed: int = 0) -> Path:
    """Write `model.keras` + `manifest.json` for a small random CNN with the production graph
    (nested "backbone", "embedding", "logits", "temperature") to `directory`."""
    import keras

    from trainer_service.ml.network import build_classifier

    keras.utils.set_random_seed(seed)
    height, width = input_size
    inputs = keras.Input((height, width, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    backbone = keras.Model(inputs, keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x))
    model = build_classifier(backbone, len(classes))
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "model.keras")
    manifest = ModelManifest(version=version, classes=list(classes), input_size=input_size,
                             backbone="tiny-cnn")
    (directory / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    return directory
