"""Models served through LiteRT: one interpreter (XNNPACK kernels) per concurrent caller.

A version's LiteRT file is made once, when the trainer saves it (`model.tflite` beside
`model.keras`, its digest in the manifest's `litert`), and checked against Keras there; a worker
loads it with `ai-edge-litert` alone (`read_published`, `LiteRTForward`) and never imports
TensorFlow. A version saved before that is converted by each worker that loads it (`convert`,
which needs TensorFlow; cached on disk by the Keras file's digest).

On a CPU, LiteRT runs the same float32 graph as TensorFlow about 1.5-2x faster per core (README,
"Serving fast").
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import queue
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.atomic_file import write_whole

if TYPE_CHECKING:
    from shared.manifest import LiteRTArtifact

log = logging.getLogger(__name__)
#: ai_edge_litert's Interpreter: the package ships no type hints.
_Interpreter = Any


def sha256_of(data: bytes) -> str:
    """The hex SHA-256 of `data`: how a manifest names its LiteRT file."""
    return hashlib.sha256(data).hexdigest()


def read_published(directory: Path, record: LiteRTArtifact) -> bytes:
    """The LiteRT file `record` (a manifest's `litert`) names in `directory`. Raises
    FileNotFoundError when it is not there and ValueError when its digest is not the manifest's
    (a partial download, or a file that is not the one published)."""
    data = (directory / record.file).read_bytes()
    if sha256_of(data) != record.sha256:
        raise ValueError(f"{record.file} in {directory} is not the file its manifest names "
                         f"(SHA-256 {sha256_of(data)[:12]}..., manifest {record.sha256[:12]}...)")
    return data


def convert(model: object, artifact: Path, cache_dir: Path | None, *, part: str = "") -> bytes:
    """The LiteRT flatbuffer of `model` (loaded from `artifact`, or a `part` of it such as
    "embedding"), from `cache_dir` when an earlier load converted the same file and part (keyed by
    the file's SHA-256), else converted and cached there (`cache_dir` None: always converted, and
    `artifact` not read). Needs TensorFlow; raises what its converter raises."""
    cached = None
    if cache_dir is not None:
        digest = sha256_of(artifact.read_bytes())
        cached = cache_dir / f"{digest}{'-' + part if part else ''}.tflite"
        if cached.is_file():
            return cached.read_bytes()
    import tensorflow as tf

    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the SavedModel it exports on the way
        flatbuffer: bytes = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            write_whole(cached, flatbuffer)  # workers sharing the cache never read half a file
        except OSError as exc:
            log.warning("could not cache the converted model in %s: %s", cache_dir, exc)
    return flatbuffer


class LiteRTForward:
    """`forward(images, threads=None)`: the raw model outputs (a list, one (n, ...) array per model
    output) for uint8 images (n, height, width, 3), computed by an interpreter of `threads` threads
    (None: the `threads` it was made with).

    Thread-safe: each call borrows an interpreter of its thread count from that count's pool (an
    interpreter serves one caller at a time) and creates one when all are busy, so each pool grows
    to the number of concurrent callers at its count. Images run one at a time: XNNPACK's cost per
    image is flat in the batch size, and a fixed input shape never reallocates. Interpreters
    release the GIL while they run.
    """

    def __init__(self, flatbuffer: bytes, threads: int) -> None:
        self._flatbuffer = flatbuffer
        self._threads = threads
        self._idle: dict[int, queue.SimpleQueue[_Interpreter]] = {}
        first = self._new_interpreter(threads)
        details = first.get_input_details()[0]
        self._input, self._dtype, self._shape = details["index"], details["dtype"], details["shape"]
        self._outputs = [d["index"] for d in first.get_output_details()]
        self._pool(threads).put(first)

    def _pool(self, threads: int) -> queue.SimpleQueue[_Interpreter]:
        # setdefault is one step under the GIL: two first callers at a new count share one pool
        return self._idle.setdefault(threads, queue.SimpleQueue())

    def _new_interpreter(self, threads: int) -> _Interpreter:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=self._flatbuffer, num_threads=threads)
        interpreter.allocate_tensors()
        return interpreter

    def prepare(self, callers: int, threads: int | None = None) -> None:
        """Create interpreters of `threads` threads (None: the default) up front for `callers`
        concurrent calls, and run each once."""
        count = threads or self._threads
        spare = [self._borrow(count) for _ in range(callers)]
        for interpreter in spare:
            self._run(interpreter, np.zeros(self._shape, np.uint8))
            self._pool(count).put(interpreter)

    def _borrow(self, threads: int) -> _Interpreter:
        try:
            return self._pool(threads).get_nowait()
        except queue.Empty:
            return self._new_interpreter(threads)

    def _run(self, interpreter: _Interpreter, image: np.ndarray) -> list[np.ndarray]:
        interpreter.set_tensor(self._input, image.astype(self._dtype, copy=False))
        interpreter.invoke()
        return [interpreter.get_tensor(i) for i in self._outputs]

    def __call__(self, images: np.ndarray, threads: int | None = None) -> list[np.ndarray]:
        """Every output of the model, each (n, ...), in the interpreter's output order, computed
        on `threads` threads (None: the default)."""
        count = threads or self._threads
        interpreter = self._borrow(count)
        try:
            rows = [self._run(interpreter, images[i:i + 1]) for i in range(len(images))]
        finally:
            self._pool(count).put(interpreter)
        return [np.concatenate([row[k] for row in rows]) for k in range(len(self._outputs))]
