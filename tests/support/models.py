"""A tiny real Keras classifier for tests that need a model but not a good one."""

from __future__ import annotations

from pathlib import Path

from shared.manifest import ModelManifest


def make_tiny_model(directory: Path, *, version: str = "tiny-v1",
                    classes: tuple[str, ...] = ("melanoma", "melanocytic_nevi", "benign_keratosis"),
                    input_size: tuple[int, int] = (32, 32), seed: int = 0) -> Path:
    """Write `model.keras` + `manifest.json` for a small random CNN to `directory`."""
    import keras

    keras.utils.set_random_seed(seed)
    height, width = input_size
    inputs = keras.Input((height, width, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="embedding")(x)
    outputs = keras.layers.Dense(len(classes), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "model.keras")
    manifest = ModelManifest(version=version, classes=list(classes), input_size=input_size, backbone="tiny-cnn")
    (directory / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    return directory
