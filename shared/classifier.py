"""A loaded model ready to serve: the Keras model behind one compiled call, plus its manifest.

Importing this module imports TensorFlow; only processes that run models do.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from shared.manifest import ModelManifest

log = logging.getLogger(__name__)


def configure_threads(intra_op: int, inter_op: int) -> None:
    """Fit TensorFlow's thread pools to the host; call before the first model is built."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:
        log.warning("TensorFlow already initialised; thread settings unchanged")


def _manifest_for(artifact: Path, model: object) -> ModelManifest:
    beside = artifact.with_name("manifest.json")
    if beside.is_file():
        return ModelManifest.model_validate_json(beside.read_text())
    _, height, width, _ = model.input_shape  # type: ignore[attr-defined]
    outputs = model.output_shape[-1]  # type: ignore[attr-defined]
    return ModelManifest(
        version=artifact.stem,
        classes=[f"class_{i}" for i in range(outputs)],
        input_size=(height, width),
        backbone="unknown",
    )


class Classifier:
    """Runs a batch of preprocessed images through the model. `predict` is thread-safe
    (TensorFlow releases the GIL), so several batches may run at once."""

    def __init__(self, model: object, manifest: ModelManifest) -> None:
        import tensorflow as tf

        self.manifest = manifest
        self.version = manifest.version
        self.classes = list(manifest.classes)
        height, width = manifest.input_size
        self.input_size: tuple[int, int] = (height, width)

        @tf.function(
            input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8)],
            reduce_retracing=True,
        )
        def forward(images: tf.Tensor) -> tf.Tensor:
            return model(tf.cast(images, tf.float32), training=False)  # type: ignore[operator]

        self._forward = forward
        self._model = model
        probe = np.asarray(forward(np.zeros((1, height, width, 3), np.uint8)))
        self._softmax = not (np.all(probe >= 0) and np.allclose(probe.sum(axis=-1), 1.0, atol=1e-3))
        if probe.shape[-1] != len(self.classes):
            raise ValueError(
                f"model has {probe.shape[-1]} outputs but its manifest names {len(self.classes)} classes"
            )

    @classmethod
    def load(cls, path: Path) -> Classifier:
        """Load `path`: a `.keras` file or a directory holding `model.keras` (+ `manifest.json`)."""
        import keras

        artifact = path / "model.keras" if path.is_dir() else path
        model = keras.saving.load_model(artifact, compile=False)
        return cls(model, _manifest_for(artifact, model))

    def warm_up(self, max_batch_size: int) -> None:
        """Run every batch size up to `max_batch_size` once, so that no request pays for the
        first call of a new input shape (TensorFlow sets up kernels per shape on first use)."""
        height, width = self.input_size
        for size in range(1, max_batch_size + 1):
            self._forward(np.zeros((size, height, width, 3), np.uint8))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (n, classes) for uint8 images (n, height, width, 3)."""
        scores = np.asarray(self._forward(images), dtype=np.float64)
        if self._softmax:
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
        return scores
