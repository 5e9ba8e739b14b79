"""A loaded model ready to serve: the model behind one thread-safe call (LiteRT or TensorFlow),
plus its manifest.

A version saved with a LiteRT file of its own (`manifest.litert`: converted and checked against
Keras by the trainer, `trainer_service.ml.artifacts`) is served from that file with `ai-edge-litert`
alone: this module then imports neither TensorFlow nor Keras. A version without one, or the
`tensorflow` engine, loads the Keras file, which imports TensorFlow: on `litert` that model is
converted here (cached by the file's digest) and served on LiteRT if it answers what Keras
answers (`parity_gap`), else on TensorFlow.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol, get_args

import numpy as np

from shared import litert
from shared.imaging import check_policy
from shared.manifest import ModelManifest
from shared.taxonomy import admissible_for

log = logging.getLogger(__name__)

Engine = Literal["litert", "tensorflow"]
ENGINES: tuple[str, ...] = get_args(Engine)
#: Largest gap allowed between the LiteRT and Keras outputs (`parity_gap`), when the trainer
#: saves a version and when a worker converts one itself.
PARITY_TOLERANCE = 1e-4
#: Probabilities below this are compared as this in log space: a class that far out of the
#: running may underflow differently in the two engines without changing any answer.
_LOG_FLOOR = 1e-12


class Forward(Protocol):
    """Raw model outputs, one (n, ...) array per model output, for uint8 images (n, height, width,
    3), computed on `threads` threads where the engine sets them per call (LiteRT; None: the
    model's default); TensorFlow's pools are the process's and ignore it."""

    def __call__(self, images: np.ndarray, threads: int | None = None) -> list[np.ndarray]: ...

#: TensorFlow thread pools `configure_threads(..., lazily=True)` asked for, applied when this
#: module first imports TensorFlow. Module state because the pools themselves are process state.
_deferred_threads: dict[str, int] = {}


def configure_threads(intra_op: int, inter_op: int, *, lazily: bool = False) -> None:
    """Fit TensorFlow's thread pools to the host; call before the first model is built.

    `lazily`: unless TensorFlow is loaded already, do not import it for this; the numbers are
    applied when a model here first needs TensorFlow (a Keras file), so that a process serving
    LiteRT files never imports it.
    """
    if lazily and "tensorflow" not in sys.modules:
        _deferred_threads.update(intra_op=intra_op, inter_op=inter_op)
        return
    _set_threads(intra_op, inter_op)


def _set_threads(intra_op: int, inter_op: int) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:
        log.warning("TensorFlow already initialised; thread settings unchanged")


def _apply_deferred_threads() -> None:
    """Set the thread pools a lazy `configure_threads` asked for; call where TensorFlow is imported."""
    if _deferred_threads:
        _set_threads(_deferred_threads.pop("intra_op"), _deferred_threads.pop("inter_op"))


def probe_images(input_size: tuple[int, int], count: int = 8) -> np.ndarray:
    """`count` seeded random uint8 images of `input_size` (height, width): the inputs on which a
    model's LiteRT outputs are compared with its Keras outputs."""
    height, width = input_size
    return np.random.default_rng(0).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def split_outputs(outputs: list[np.ndarray], classes: int) -> np.ndarray:
    """Model outputs -> (n, classes + 1): the class scores, then the OOD score (NaN if none).

    Outputs are told apart by width (the class scores have one column per class, the OOD
    score one), not by order, which LiteRT's conversion may change. Raises ValueError for a
    model whose outputs do not fit its manifest.
    """
    scores = [o for o in outputs if o.shape[-1] == classes]
    extra = [o for o in outputs if o.shape[-1] == 1 and classes != 1]
    if len(scores) != 1 or len(outputs) > 2 or (len(outputs) == 2 and len(extra) != 1):
        raise ValueError(f"model outputs {[o.shape for o in outputs]} do not fit the manifest's "
                         f"{classes} classes (+ an optional OOD score)")
    ood = extra[0].reshape(-1, 1) if extra else np.full((len(scores[0]), 1), np.nan)
    return np.concatenate([scores[0].astype(np.float64), ood.astype(np.float64)], axis=1)


def _are_logits(scores: np.ndarray) -> bool:
    """Whether class scores are logits (softmax still to apply) rather than probabilities."""
    return not (np.all(scores >= 0) and np.allclose(scores.sum(axis=-1), 1.0, atol=1e-3))


def _probabilities(scores: np.ndarray, softmax: bool) -> np.ndarray:
    probabilities = np.asarray(scores, dtype=np.float64)
    if softmax:
        probabilities = np.exp(probabilities - probabilities.max(axis=-1, keepdims=True))
        probabilities /= probabilities.sum(axis=-1, keepdims=True)
    return probabilities


def _gap(expected: np.ndarray, got: np.ndarray, *, relative: bool = False) -> float:
    """Largest absolute difference (relative: over the expected values' scale + 1); infinite
    where only one side has a number."""
    difference = np.abs(got - expected)
    if np.isnan(difference).any():
        return float("inf")
    scale = float(np.abs(expected).max()) + 1 if relative else 1.0
    return float(difference.max()) / scale


def parity_gap(expected: list[np.ndarray], got: list[np.ndarray], classes: int) -> float:
    """How far `got` (LiteRT's outputs) is from `expected` (Keras's, on the same images): the
    largest of the probabilities' gap; the gap of the centred log-probabilities (the logits over
    the temperature, up to a constant per image), relative to their scale, since where the
    softmax is flat wrong logits still give close probabilities; and the OOD score's gap relative
    to its scale (distances are large numbers). Raises ValueError for outputs that do not fit
    `classes`."""
    want, have = split_outputs(expected, classes), split_outputs(got, classes)
    softmax = _are_logits(want[:, :-1])
    p_want, p_have = _probabilities(want[:, :-1], softmax), _probabilities(have[:, :-1], softmax)
    log_want, log_have = (np.log(np.maximum(p, _LOG_FLOOR)) for p in (p_want, p_have))
    gaps = [_gap(p_want, p_have),
            _gap(log_want - log_want.mean(axis=-1, keepdims=True),
                 log_have - log_have.mean(axis=-1, keepdims=True), relative=True)]
    if not np.isnan(want[:, -1]).all():
        gaps.append(_gap(want[:, -1], have[:, -1], relative=True))
    return max(gaps)


def checked_litert(model: object, flatbuffer: bytes, manifest: ModelManifest, *,
                   threads: int = 1) -> tuple[litert.LiteRTForward, float]:
    """`flatbuffer` (the LiteRT conversion of the Keras `model`) ready to run, and how far its
    outputs are from the model's on `probe_images` (`parity_gap`: the caller holds it to
    PARITY_TOLERANCE). Imports TensorFlow; raises what the interpreter raises, and ValueError for
    outputs that do not fit the manifest."""
    import tensorflow as tf

    _apply_deferred_threads()
    lite = litert.LiteRTForward(flatbuffer, threads)
    probe = probe_images(manifest.input_size)
    # a Keras model is callable; without Keras type hints mypy sees an object
    outputs = model(tf.cast(probe, tf.float32), training=False)  # type: ignore[operator]
    expected = [np.asarray(t) for t in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]
    return lite, parity_gap(expected, lite(probe), len(manifest.classes))


def _manifest_for(artifact: Path, model: object) -> ModelManifest:
    """A manifest for a Keras file that has none beside it, from the model's shapes."""
    # Keras ships no type hints: a model's shapes are attributes mypy cannot see
    _, height, width, _ = model.input_shape  # type: ignore[attr-defined]
    outputs = model.output_shape[-1]  # type: ignore[attr-defined]
    return ModelManifest(
        version=artifact.stem,
        classes=[f"class_{i}" for i in range(outputs)],
        input_size=(height, width),
        backbone="unknown",
    )


class Classifier:
    """Runs a batch of preprocessed images through the model. `predict` is thread-safe (both
    engines release the GIL), so several batches may run at once.

    Made by `load`, which picks what serves: `engine` says which did, `litert` (one interpreter
    per concurrent call, XNNPACK kernels) or `tensorflow` (the Keras model behind one compiled
    `tf.function` with a free batch dimension, so no batch size retraces; its threads come from
    `configure_threads`).
    """

    def __init__(self, manifest: ModelManifest, forward: Forward, *, engine: Engine,
                 prepare: Callable[[int, int, int | None], None]) -> None:
        """`forward` runs the model (thread-safe); `prepare(max_batch_size, streams, threads)`
        readies every call a worker will make. Runs `forward` once, on two probe images."""
        self.manifest = manifest
        self.version = manifest.version
        self.classes = list(manifest.classes)
        height, width = manifest.input_size
        self.input_size: tuple[int, int] = (height, width)
        self.preprocessing = check_policy(manifest.preprocessing)
        #: `admissible` under the model's own links: rolls probabilities up, feeds `decide`.
        self.links = admissible_for(self.classes, manifest.parents)
        #: The engine actually serving: `litert` or `tensorflow`.
        self.engine: Engine = engine
        self._forward = forward
        self._prepare = prepare
        first = split_outputs(forward(probe_images(self.input_size, 2)), len(self.classes))
        self.has_ood = not np.isnan(first[:, -1]).all()
        self._softmax = _are_logits(first[:, :-1])

    @classmethod
    def load(cls, path: Path, *, engine: str = "litert", threads: int = 1,
             cache_dir: Path | None = None) -> Classifier:
        """Load `path`: a directory holding `model.keras` and `manifest.json` (and the LiteRT file
        the manifest names, if any), or a `.keras` file (its manifest beside it, if any).

        On the `litert` engine, a version with a LiteRT file of its own is served from it alone
        (neither TensorFlow nor Keras is imported); one whose file is missing or not the one its
        manifest names is logged and loaded from its Keras file. The Keras file (a version
        without a LiteRT file, or the `tensorflow` engine): see `from_keras`. `threads`: LiteRT's
        threads per call. Raises ValueError for an unknown engine.
        """
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
        artifact = path / "model.keras" if path.is_dir() else path
        beside = artifact.with_name("manifest.json")
        manifest = ModelManifest.model_validate_json(beside.read_text()) if beside.is_file() else None
        if engine == "litert" and manifest is not None and manifest.litert is not None:
            try:
                flatbuffer = litert.read_published(artifact.parent, manifest.litert)
            except (OSError, ValueError) as exc:
                log.warning("model %s: its LiteRT file cannot be served (%s); loading its Keras file",
                            manifest.version, exc)
            else:
                return cls.from_litert(flatbuffer, manifest, threads=threads)
        return cls.from_keras(artifact, manifest, engine=engine, threads=threads, cache_dir=cache_dir)

    @classmethod
    def from_litert(cls, flatbuffer: bytes, manifest: ModelManifest, *, threads: int = 1) -> Classifier:
        """A model served from its LiteRT flatbuffer; `manifest` says what it predicts."""
        lite = litert.LiteRTForward(flatbuffer, threads)
        return cls(manifest, lite, engine="litert",
                   prepare=lambda _, streams, threads: lite.prepare(streams, threads))

    @classmethod
    def from_keras(cls, artifact: Path, manifest: ModelManifest | None, *, engine: str = "litert",
                   threads: int = 1, cache_dir: Path | None = None) -> Classifier:
        """The Keras model in `artifact` (imports TensorFlow; `manifest` None: one is made from
        the model's shapes). On `litert` it is converted (kept in `cache_dir` between loads of
        the same file) and served on LiteRT if its outputs match Keras's (`checked_litert`), else
        on TensorFlow with a warning; on `tensorflow`, in a compiled tf.function. Raises
        RuntimeError where TensorFlow is not installed (the worker image)."""
        try:
            import keras
            import tensorflow as tf
        except ImportError as exc:
            raise RuntimeError(
                f"{artifact} needs TensorFlow ({exc}), which this worker does not have: its version has no "
                f"LiteRT file (save it again with the trainer, which makes one) or the tensorflow engine "
                f"was asked for; serve it with the full image (requirements.txt)") from exc
        _apply_deferred_threads()

        model = keras.saving.load_model(artifact, compile=False)
        manifest = manifest or _manifest_for(artifact, model)
        if engine == "litert":
            lite = _converted(model, artifact, manifest, threads, cache_dir)
            if lite is not None:
                return cls(manifest, lite, engine="litert",
                           prepare=lambda _, streams, threads: lite.prepare(streams, threads))
        height, width = manifest.input_size

        # TensorFlow ships no type hints: tf.function is Any to mypy
        @tf.function(  # type: ignore[untyped-decorator]
            input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8)],
            reduce_retracing=True,
        )
        def graph(images: tf.Tensor) -> list[tf.Tensor]:
            outputs = model(tf.cast(images, tf.float32), training=False)
            return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

        def forward(images: np.ndarray, threads: int | None = None) -> list[np.ndarray]:
            return [np.asarray(t) for t in graph(images)]  # threads: the process's pools (configure_threads)

        def prepare(max_batch_size: int, _streams: int, _threads: int | None) -> None:  # per input shape
            for size in range(1, max_batch_size + 1):
                forward(np.zeros((size, height, width, 3), np.uint8))

        return cls(manifest, forward, engine="tensorflow", prepare=prepare)

    def warm_up(self, max_batch_size: int, streams: int = 1, *, threads: int | None = None) -> None:
        """Prepare every call the worker will make, so that no request pays for a first call:
        TensorFlow sets up kernels per input shape (every batch size up to `max_batch_size`),
        LiteRT needs an interpreter per concurrent call (`streams`) at each thread count calls
        ask for (`threads`, None: the load's; call once per count)."""
        self._prepare(max_batch_size, streams, threads)

    def predict_scores(self, images: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        """(n, classes + 1) for uint8 images (n, height, width, 3): the class probabilities, then
        the out-of-distribution score (NaN when the model has no detector). `threads`: LiteRT's
        threads for this call (None: the load's `threads`); TensorFlow's are the process's."""
        out = split_outputs(self._forward(images, threads), len(self.classes))
        out[:, :-1] = _probabilities(out[:, :-1], self._softmax)
        return out

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (n, classes) for uint8 images (n, height, width, 3)."""
        return self.predict_scores(images)[:, :-1]


def _converted(model: object, artifact: Path, manifest: ModelManifest, threads: int,
               cache_dir: Path | None) -> litert.LiteRTForward | None:
    """The Keras `model` converted to LiteRT if it answers what Keras answers, else None (logged)."""
    try:
        lite, gap = checked_litert(model, litert.convert(model, artifact, cache_dir), manifest,
                                   threads=threads)
    except Exception as exc:  # noqa: BLE001 - a layer LiteRT cannot convert, a missing runtime, ...
        log.warning("model %s: LiteRT unavailable (%s); serving with TensorFlow", manifest.version, exc)
        return None
    if gap > PARITY_TOLERANCE:
        log.warning("model %s: LiteRT output differs from Keras by %.2g; serving with TensorFlow",
                    manifest.version, gap)
        return None
    return lite
