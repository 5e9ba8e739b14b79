"""Resumable fine-tuning: the whole training state after each epoch, written atomically.

A run's directory holds `state.json` (epoch reached, best score and epoch, the per-epoch
history), `weights.npz` (every variable of the model now: BatchNorm statistics and dropout's random
state included), `optimizer.npz` (its
step counter and moments), `best.npz` (the best epoch's weights) and, when the recipe averages its
last epochs, `average.npz` (their running mean so far). Random streams are seeded
per epoch from the recipe's seed, so a resumed run draws what an unbroken one would have.
Starting the same command again picks up after the last finished epoch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from shared.atomic_file import replacing, write_whole


@dataclass
class TrainingState:
    """Where a fine-tuning run stands: epochs done, the best so far, and what each epoch scored."""

    epoch: int = 0
    best: float = -1.0
    best_epoch: int = -1
    averaged: int = 0  # epochs in the running weight average
    history: list[dict[str, Any]] = field(default_factory=list)


def _write_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    with replacing(path) as handle:
        np.savez(handle, *arrays)


def _read_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


class Checkpoint:
    """Saves and restores one run's training state in `directory` (created on first save)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def exists(self) -> bool:
        """True when a finished epoch has been saved here."""
        return (self.directory / "state.json").is_file()

    def save(self, model: keras.Model, optimizer: keras.optimizers.Optimizer, state: TrainingState,
             *, best_weights: list[np.ndarray] | None,
             average_weights: list[np.ndarray] | None = None) -> None:
        """Write the state (`best_weights`, `average_weights`: only when they changed); `state.json`
        goes last, so a crash mid-save leaves the previous epoch."""
        self.directory.mkdir(parents=True, exist_ok=True)
        _write_arrays(self.directory / "weights.npz", [np.asarray(v.numpy()) for v in model.variables])
        _write_arrays(self.directory / "optimizer.npz", [np.asarray(v.numpy()) for v in optimizer.variables])
        if best_weights is not None:
            _write_arrays(self.directory / "best.npz", best_weights)
        if average_weights is not None:
            _write_arrays(self.directory / "average.npz", average_weights)
        write_whole(self.directory / "state.json", (json.dumps(asdict(state), indent=1) + "\n").encode())

    def restore(self, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> TrainingState:
        """Load the saved weights into `model` and moments into `optimizer` (built here for the
        model's trainable variables); returns the saved state. Raises ValueError when the saved
        arrays do not fit the model or optimizer (a different recipe)."""
        state = TrainingState(**json.loads((self.directory / "state.json").read_text()))
        saved_model = _read_arrays(self.directory / "weights.npz")
        if len(saved_model) == len(model.variables):
            for variable, value in zip(model.variables, saved_model, strict=True):
                variable.assign(value)
        elif len(saved_model) == len(model.weights):  # saved before the random state was kept
            model.set_weights(saved_model)
        else:
            raise ValueError(f"checkpoint has {len(saved_model)} model arrays, "
                             f"the model {len(model.variables)}")
        optimizer.build(model.trainable_variables)
        saved = _read_arrays(self.directory / "optimizer.npz")
        if len(saved) != len(optimizer.variables):
            raise ValueError(f"checkpoint has {len(saved)} optimizer arrays, "
                             f"the optimizer {len(optimizer.variables)}")
        for variable, value in zip(optimizer.variables, saved, strict=True):
            variable.assign(value)
        return state

    def best_weights(self) -> list[np.ndarray] | None:
        """The best epoch's weights, or None before any epoch finished."""
        return self._saved("best.npz")

    def average_weights(self) -> list[np.ndarray] | None:
        """The running mean of the averaged epochs' weights, or None before the first of them."""
        return self._saved("average.npz")

    def _saved(self, name: str) -> list[np.ndarray] | None:
        path = self.directory / name
        return _read_arrays(path) if path.is_file() else None
