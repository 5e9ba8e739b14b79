"""Model artifacts on disk: a directory holding `model.keras` and `manifest.json`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import keras

from shared.manifest import ModelManifest

MODEL_FILE = "model.keras"
MANIFEST_FILE = "manifest.json"


def save_artifact(model: keras.Model, manifest: ModelManifest, directory: Path) -> Path:
    """Write `model` and `manifest` into `directory` (created if needed); returns `directory`.

    Raises FileExistsError if `directory` already holds a model: versions are immutable.
    """
    if (directory / MODEL_FILE).exists():
        raise FileExistsError(f"{directory} already holds a model")
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / MODEL_FILE)
    (directory / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    return directory


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
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit
