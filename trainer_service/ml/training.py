"""Transfer learning: fit a new head on cached embeddings, then fine-tune most of the network.

Stage 1 trains the Dense head on embeddings of the frozen backbone (computed once, no
augmentation): cheap, and it gives stage 2 a sensible head instead of random gradients. Stage 2
unfreezes the backbone from `first_trainable` on (BatchNorm stays frozen) and trains on the
augmented, rebalanced stream with a warm-up + cosine learning rate, keeping the weights of the
epoch with the best validation score. With `Recipe.average_last` the mean of the last epochs'
weights is one more candidate (stochastic weight averaging over the tail of the schedule: one
score of a smoother model instead of the luckiest epoch; BatchNorm is frozen, so no statistics
need recomputing). Thread-unsafe: one training per process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from trainer_service.ml.checkpoint import Checkpoint, TrainingState
from trainer_service.ml.dataset import ImageSet
from trainer_service.ml.evaluation import predict
from trainer_service.ml.head import fit_head
from trainer_service.ml.network import LOGITS, embedding_model, logits_model, set_backbone_trainable
from trainer_service.ml.pipeline import set_cross_entropy, training_stream
from trainer_service.ml.proportions import balanced_accuracy

Log = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of one training run (the defaults are the base model's recipe)."""

    batch_size: int = 32
    head_epochs: int = 30
    head_learning_rate: float = 1e-3
    epochs: int = 7
    steps_per_epoch: int = 200
    learning_rate: float = 5e-4
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    sampling_power: float = 0.5
    first_trainable: str | None = "block1_expand_conv"
    max_minutes: float | None = None
    seed: int = 0
    average_last: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.average_last <= self.epochs:
            raise ValueError(f"average_last must be 0-{self.epochs} (the epochs), not {self.average_last}")


def train_head(model: keras.Model, train: ImageSet, recipe: Recipe, log: Log) -> None:
    """Fit the "logits" layer on frozen-backbone embeddings of `train`, class-balanced."""
    t0 = time.monotonic()
    features = predict(embedding_model(model), train.images)
    log(f"head: embedded {len(features)} images in {time.monotonic() - t0:.0f}s")
    kernel, bias = fit_head(features.astype(np.float32), train.labels, len(train.classes),
                            epochs=recipe.head_epochs, learning_rate=recipe.head_learning_rate, batch_size=64)
    model.get_layer(LOGITS).set_weights([kernel, bias])
    log(f"head: done in {time.monotonic() - t0:.0f}s")


#: Scores a model on held-out data after an epoch: (selection score, figures to log and record).
Scorer = Callable[[keras.Model], tuple[float, dict[str, float]]]


def balanced_accuracy_on(held_out: ImageSet) -> Scorer:
    """The default scorer: balanced accuracy of the argmax on `held_out`."""

    def score(model: keras.Model) -> tuple[float, dict[str, float]]:
        logits = predict(logits_model(model), held_out.images)
        value = balanced_accuracy(logits.argmax(axis=1) == held_out.labels, held_out.labels)
        return value, {"val_balanced_accuracy": value}

    return score


def fine_tune(
    model: keras.Model,
    train: ImageSet,
    held_out: ImageSet,
    recipe: Recipe,
    log: Log,
    *,
    strata: np.ndarray | None = None,
    admissible: np.ndarray | None = None,
    score: Scorer | None = None,
    checkpoint: Checkpoint | None = None,
) -> list[dict[str, Any]]:
    """Stage 2 (see module doc). Returns the per-epoch history; `model` ends at the best epoch.

    `strata` and `admissible` are passed to the stream and the loss (`training_stream`,
    `set_cross_entropy`); `score` picks the best epoch (default: balanced accuracy on
    `held_out`). With `recipe.average_last` = K, the mean of the weights at the end of the last
    K epochs is scored after the last epoch and kept if it beats every epoch; its row in the
    history has `averaged_epochs` [first, last]. The kept row has `kept: True`. With `checkpoint`,
    every finished epoch is saved (the running mean too) and a saved run resumes where it
    stopped; `recipe.max_minutes` bounds this call, not the whole run.
    """
    set_backbone_trainable(model, True, first_trainable=recipe.first_trainable)
    total = recipe.epochs * recipe.steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(total - recipe.warmup_steps, 1), warmup_target=recipe.learning_rate,
        warmup_steps=recipe.warmup_steps,
    )
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=recipe.weight_decay)
    num_classes = len(train.classes)
    model.compile(optimizer=optimizer, loss=set_cross_entropy(
        np.eye(num_classes) if admissible is None else admissible))
    scorer = score or balanced_accuracy_on(held_out)
    state, best_weights, average = TrainingState(), None, None
    if checkpoint is not None and checkpoint.exists():
        state = checkpoint.restore(model, optimizer)
        best_weights, average = checkpoint.best_weights(), checkpoint.average_weights()
        log(f"fine-tune: resumed after epoch {state.epoch} "
            f"(best {state.best:.4f} at epoch {state.best_epoch})")
    log(f"fine-tune: {model.count_params():,} params, {_trainable(model):,} trainable, {total} steps")
    started = time.monotonic()
    first = state.epoch
    for epoch in range(first, recipe.epochs):
        over_budget = recipe.max_minutes is not None and time.monotonic() - started > recipe.max_minutes * 60
        if epoch > first and over_budget:
            log(f"time budget reached after epoch {epoch}: stopping (the same command resumes)")
            break
        keras.utils.set_random_seed(recipe.seed * 1000 + epoch)
        stream = training_stream(
            train.images, train.labels, num_classes, batch_size=recipe.batch_size,
            power=recipe.sampling_power, seed=recipe.seed * 1000 + epoch, strata=strata,
        )
        fitted = model.fit(stream, initial_epoch=epoch, epochs=epoch + 1,
                           steps_per_epoch=recipe.steps_per_epoch,
                           verbose=0, shuffle=False)  # the stream is shuffled per stratum already
        value, figures = scorer(model)
        loss = float(fitted.history["loss"][-1])
        state.epoch = epoch + 1
        state.history.append({"epoch": epoch + 1, "loss": loss, "score": value, **figures})
        shown = " ".join(f"{k} {v:.4f}" for k, v in figures.items())
        log(f"epoch {epoch + 1}: loss {loss:.4f} score {value:.4f} ({shown}) "
            f"({(time.monotonic() - started) / 60:.1f} min)")
        if value > state.best:
            state.best, state.best_epoch = value, epoch + 1
            best_weights = [np.array(w) for w in model.get_weights()]
        averaging = epoch + 1 > recipe.epochs - recipe.average_last
        if averaging:
            state.averaged += 1
            average = _running_mean(average, model.get_weights(), state.averaged)
        if checkpoint is not None:
            checkpoint.save(model, optimizer, state,
                            best_weights=best_weights if state.best_epoch == epoch + 1 else None,
                            average_weights=average if averaging else None)
    history = [dict(row) for row in state.history]
    if average is not None and state.epoch == recipe.epochs:
        model.set_weights(average)
        value, figures = scorer(model)
        span = [recipe.epochs - state.averaged + 1, recipe.epochs]
        history.append({"epoch": recipe.epochs, "averaged_epochs": span, "score": value, **figures})
        log(f"average of epochs {span[0]}-{span[1]}: score {value:.4f}")
        if value > state.best:
            history[-1]["kept"] = True
            log(f"kept the average of epochs {span[0]}-{span[1]} (score {value:.4f} > {state.best:.4f})")
            best_weights = None
    if best_weights is not None:
        model.set_weights(best_weights)
        history[state.best_epoch - 1]["kept"] = True
        log(f"restored epoch {state.best_epoch} (score {state.best:.4f})")
    set_backbone_trainable(model, False)
    return history


def _running_mean(mean: list[np.ndarray] | None, weights: list[np.ndarray], count: int) -> list[np.ndarray]:
    """The mean of `count` weight lists, given the mean of the first `count - 1` and the last."""
    if mean is None or count == 1:
        return [np.array(w, dtype=np.float64) for w in weights]
    return [m + (np.asarray(w, np.float64) - m) / count for m, w in zip(mean, weights, strict=True)]


def _trainable(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def held_out_logits(model: keras.Model, held_out: ImageSet) -> np.ndarray:
    """Uncalibrated logits of `model` on `held_out` (for temperature fitting)."""
    return predict(logits_model(model), held_out.images)
