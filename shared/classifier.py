"""A loaded model ready to serve: the model behind one thread-safe call (LiteRT or TensorFlow),
plus its manifest. Only processes that run models import TensorFlow (when they build one).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from shared.imaging import check_policy
from shared.manifest import ModelManifest
from shared.taxonomy import admissible_for

if TYPE_CHECKING:
    from shared.litert import LiteRTForward

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
    # Keras ships no type hints: a model's shapes are attributes mypy cannot see
    _, height, width, _ = model.input_shape  # type: ignore[attr-defined]
    outputs = model.output_shape[-1]  # type: ignore[attr-defined]
    return ModelManifest(
        version=artifact.stem,
        classes=[f"class_{i}" for i in range(outputs)],
        input_size=(height, width),
        backbone="unknown",
    )


Engine = Literal["litert", "tensorflow"]
ENGINES: tuple[str, ...] = get_args(Engine)
PARITY_TOLERANCE = 1e-4  # largest probability gap allowed between the LiteRT and Keras outputs


class Classifier:
    """Runs a batch of preprocessed images through the model. `predict` is thread-safe (both
    engines release the GIL), so several batches may run at once.

    `engine` is `litert` (the model converted to LiteRT; kept only if its outputs match Keras on
    a probe, else TensorFlow is used and a warning logged) or `tensorflow` (the Keras model behind
    one compiled `tf.function` with a free batch dimension, so no batch size retraces). `threads`
    are LiteRT's threads per call; TensorFlow's come from `configure_threads`.
    """

    def __init__(self, model: object, manifest: ModelManifest, *, engine: str = "litert",
                 threads: int = 1, artifact: Path | None = None, cache_dir: Path | None = None) -> None:
        import tensorflow as tf

        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
        self.manifest = manifest
        self.version = manifest.version
        self.classes = list(manifest.classes)
        height, width = manifest.input_size
        self.input_size: tuple[int, int] = (height, width)
        self.preprocessing = check_policy(manifest.preprocessing)
        #: `admissible` under the model's own links: rolls probabilities up, feeds `decide`.
        self.links = admissible_for(self.classes, manifest.parents)

        # TensorFlow ships no type hints: tf.function is Any to mypy
        @tf.function(  # type: ignore[untyped-decorator]
            input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8)],
            reduce_retracing=True,
        )
        def forward(images: tf.Tensor) -> list[tf.Tensor]:
            # a Keras model is callable; without Keras type hints mypy sees an object
            outputs = model(tf.cast(images, tf.float32), training=False)  # type: ignore[operator]
            return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

        self._forward = forward
        self._lite: LiteRTForward | None = None
        probe = np.random.default_rng(0).integers(0, 256, (2, height, width, 3), dtype=np.uint8)
        expected = self._split([np.asarray(t) for t in forward(probe)])
        self.has_ood = not np.isnan(expected[:, -1]).all()
        probs = expected[:, :-1]
        self._softmax = not (np.all(probs >= 0) and np.allclose(probs.sum(axis=-1), 1.0, atol=1e-3))
        if engine == "litert":
            self._use_litert(model, artifact, cache_dir, threads, probe, expected)

    def _split(self, outputs: list[np.ndarray]) -> np.ndarray:
        """Model outputs -> (n, classes + 1): the class scores, then the OOD score (NaN if none).

        Outputs are told apart by width (the class scores have one column per class, the OOD
        score one), not by order, which LiteRT's conversion may change. Raises ValueError for a
        model whose outputs do not fit its manifest.
        """
        scores = [o for o in outputs if o.shape[-1] == len(self.classes)]
        extra = [o for o in outputs if o.shape[-1] == 1 and len(self.classes) != 1]
        if len(scores) != 1 or len(outputs) > 2 or (len(outputs) == 2 and len(extra) != 1):
            raise ValueError(f"model outputs {[o.shape for o in outputs]} do not fit the manifest's "
                             f"{len(self.classes)} classes (+ an optional OOD score)")
        ood = extra[0].reshape(-1, 1) if extra else np.full((len(scores[0]), 1), np.nan)
        return np.concatenate([scores[0].astype(np.float64), ood.astype(np.float64)], axis=1)

    def _use_litert(self, model: object, artifact: Path | None, cache_dir: Path | None, threads: int,
                    probe: np.ndarray, expected: np.ndarray) -> None:
        from shared.litert import LiteRTForward, convert

        try:
            if artifact is None:
                raise ValueError("LiteRT needs the model's file")
            lite = LiteRTForward(convert(model, artifact, cache_dir), threads)
            got = self._split(lite(probe))
            probabilities = self._probabilities(got[:, :-1]), self._probabilities(expected[:, :-1])
            gap = float(np.abs(probabilities[0] - probabilities[1]).max())
            if self.has_ood:  # distances are large numbers: compare them relatively
                scale = np.abs(expected[:, -1]).max() + 1
                gap = max(gap, float(np.abs(got[:, -1] - expected[:, -1]).max() / scale))
        except Exception as exc:  # noqa: BLE001 - a layer LiteRT cannot convert, a missing runtime, ...
            log.warning("model %s: LiteRT unavailable (%s); serving with TensorFlow", self.version, exc)
            return
        if gap > PARITY_TOLERANCE:
            log.warning("model %s: LiteRT output differs from Keras by %.2g; serving with TensorFlow",
                        self.version, gap)
            return
        self._lite = lite

    @property
    def engine(self) -> str:
        """The engine actually serving: `litert` or `tensorflow`."""
        return "tensorflow" if self._lite is None else "litert"

    @classmethod
    def load(cls, path: Path, *, engine: str = "litert", threads: int = 1,
             cache_dir: Path | None = None) -> Classifier:
        """Load `path`: a `.keras` file or a directory holding `model.keras` (+ `manifest.json`).
        `cache_dir` keeps LiteRT conversions between loads of the same file."""
        import keras

        artifact = path / "model.keras" if path.is_dir() else path
        model = keras.saving.load_model(artifact, compile=False)
        return cls(model, _manifest_for(artifact, model), engine=engine, threads=threads,
                   artifact=artifact, cache_dir=cache_dir)

    def warm_up(self, max_batch_size: int, streams: int = 1) -> None:
        """Prepare every call the worker will make, so that no request pays for a first call:
        TensorFlow sets up kernels per input shape (every batch size up to `max_batch_size`),
        LiteRT needs an interpreter per concurrent call (`streams`)."""
        if self._lite is not None:
            self._lite.prepare(streams)
            return
        height, width = self.input_size
        for size in range(1, max_batch_size + 1):
            self._forward(np.zeros((size, height, width, 3), np.uint8))

    def _probabilities(self, scores: object) -> np.ndarray:
        probabilities = np.asarray(scores, dtype=np.float64)
        if self._softmax:
            probabilities = np.exp(probabilities - probabilities.max(axis=-1, keepdims=True))
            probabilities /= probabilities.sum(axis=-1, keepdims=True)
        return probabilities

    def predict_scores(self, images: np.ndarray) -> np.ndarray:
        """(n, classes + 1) for uint8 images (n, height, width, 3): the class probabilities, then
        the out-of-distribution score (NaN when the model has no detector)."""
        raw = self._forward(images) if self._lite is None else self._lite(images)
        out = self._split([np.asarray(t) for t in raw])
        out[:, :-1] = self._probabilities(out[:, :-1])
        return out

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (n, classes) for uint8 images (n, height, width, 3)."""
        return self.predict_scores(images)[:, :-1]
