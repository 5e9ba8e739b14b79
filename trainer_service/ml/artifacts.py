"""Model artifacts on disk: a directory holding `model.keras`, `manifest.json` and, where the
manifest's `litert` names it, `model.tflite` (the same model converted once for the workers)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import keras

from shared.atomic_file import write_whole
from shared.classifier import PARITY_TOLERANCE, checked_litert
from shared.litert import convert, sha256_of
from shared.manifest import LiteRTArtifact, ModelManifest
from shared.settings import REPO_ROOT

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
MANIFEST_FILE = "manifest.json"
LITERT_FILE = "model.tflite"
#: The name of a training job's own process starts so (`trainer_service.service.apart`).
TRAINING_PROCESS = "training "


def save_artifact(model: keras.Model, manifest: ModelManifest, directory: Path, *,
                  litert: bool = True) -> Path:
    """Write `model`, its LiteRT conversion (unless `litert` is False: see `export_litert_apart`)
    and `manifest` into `directory` (created if needed); returns `directory`.

    The conversion is kept only if it answers what Keras answers (`export_litert`); `manifest`
    itself (the caller's object, which it goes on to publish) gets its `litert` set to the file
    written, or None when there is none (the workers then serve the Keras file). Raises
    FileExistsError if `directory` already holds a model: versions are immutable.
    """
    if (directory / MODEL_FILE).exists():
        raise FileExistsError(f"{directory} already holds a model")
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / MODEL_FILE)
    manifest.litert = export_litert(model, manifest, directory) if litert else None
    (directory / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    return directory


def export_litert(model: keras.Model, manifest: ModelManifest, directory: Path) -> LiteRTArtifact | None:
    """Convert `model` to LiteRT and write it to `directory/model.tflite` if its outputs match
    the model's on probe images within PARITY_TOLERANCE (`shared.classifier.checked_litert`);
    returns the manifest's record of it. A conversion that fails or differs writes nothing,
    returns None and logs a warning saying why: the version is still published, and workers
    serve it from its Keras file (TensorFlow)."""
    (directory / LITERT_FILE).unlink(missing_ok=True)  # a file left by an earlier try is not this model's
    try:
        flatbuffer = convert(model, directory / MODEL_FILE, None)
        _, gap = checked_litert(model, flatbuffer, manifest)
    except Exception as exc:  # noqa: BLE001 - a layer LiteRT cannot convert, a missing runtime, ...
        log.warning("model %s: LiteRT conversion failed (%s); saved without %s, workers will serve "
                    "its Keras file", manifest.version, exc, LITERT_FILE)
        return None
    if gap > PARITY_TOLERANCE:
        log.warning("model %s: LiteRT output differs from Keras by %.2g (tolerance %g); saved without "
                    "%s, workers will serve its Keras file", manifest.version, gap, PARITY_TOLERANCE,
                    LITERT_FILE)
        return None
    write_whole(directory / LITERT_FILE, flatbuffer)
    return LiteRTArtifact(file=LITERT_FILE, sha256=sha256_of(flatbuffer), parity_gap=gap,
                          tolerance=PARITY_TOLERANCE)


async def export_litert_apart(directory: Path, manifest: ModelManifest) -> None:
    """`export_litert` for the artifact saved in `directory`, run in a process of its own (at a
    lower priority), and `manifest.litert` (the caller's object) set to what it wrote. TensorFlow's
    converter holds the GIL for seconds: in `make run` the trainer shares its process with the
    gateway and the worker, and a conversion in a thread stalled /predict by up to 1.3 s. In a
    training job's own process (`trainer_service.service.apart`), already apart and niced, it converts
    there, in a thread."""
    if multiprocessing.current_process().name.startswith(TRAINING_PROCESS):
        await asyncio.to_thread(_convert_saved, directory, nice=False)
        manifest.litert = ModelManifest.model_validate_json(
            await asyncio.to_thread((directory / MANIFEST_FILE).read_text)).litert
        return
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "trainer_service.ml.artifacts", str(directory),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, errors = await process.communicate()
    if process.returncode != 0:
        log.warning("model %s: the LiteRT conversion process failed (%s); saved without %s",
                    manifest.version, errors.decode(errors="replace").strip()[-500:], LITERT_FILE)
        manifest.litert = None
        return
    written = await asyncio.to_thread((directory / MANIFEST_FILE).read_text)
    manifest.litert = ModelManifest.model_validate_json(written).litert


def _convert_saved(directory: Path, *, nice: bool = True) -> None:
    """`python -m trainer_service.ml.artifacts DIR`: convert DIR's model, record it in its manifest."""
    if nice:
        os.nice(10)  # serving in other processes comes first
    model, manifest = load_artifact(directory)
    manifest.litert = export_litert(model, manifest, directory)
    (directory / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")


def load_artifact(directory: Path) -> tuple[keras.Model, ModelManifest]:
    """The model and manifest in `directory`; plain `keras.saving.load_model`, no custom objects.

    Raises FileNotFoundError if either file is missing and pydantic.ValidationError for a bad
    manifest.
    """
    for name in (MODEL_FILE, MANIFEST_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} is missing")
    manifest = ModelManifest.model_validate_json((directory / MANIFEST_FILE).read_text())
    model = keras.saving.load_model(directory / MODEL_FILE, compile=False)
    return model, manifest


def code_version() -> str | None:
    """The git commit of the working tree (suffix '-dirty' when it has changes), or None."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    _convert_saved(Path(sys.argv[1]))
