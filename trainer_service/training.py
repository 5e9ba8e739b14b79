"""Transfer learning: fit a new head on cached embeddings, then fine-tune most of the network.

Stage 1 trains the Dense head on embeddings of the frozen backbone (computed once, no
augmentation): cheap, and it gives stage 2 a sensible head instead of random gradients. Stage 2
unfreezes the backbone from `first_trainable` on (BatchNorm stays frozen) and trains on the
augmented, rebalanced stream with a warm-up + cosine learning rate, keeping the weights of the
epoch with the best validation balanced accuracy. Thread-unsafe: one training per process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from trainer_service.classifier import LOGITS, embedding_model, logits_model, set_backbone_trainable
from trainer_service.dataset import ImageSet
from trainer_service.evaluation import predict
from trainer_service.pipeline import class_sampling, training_stream

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


def train_head(model: keras.Model, train: ImageSet, recipe: Recipe, log: Log) -> None:
    """Fit the "logits" layer on frozen-backbone embeddings of `train`, class-balanced."""
    t0 = time.monotonic()
    features = predict(embedding_model(model), train.images)
    log(f"head: embedded {len(features)} images in {time.monotonic() - t0:.0f}s")
    _, weights = class_sampling(train.labels, len(train.classes), power=1.0)
    head = keras.Sequential(
        [keras.Input((features.shape[1],)), model.get_layer("head_dropout"), model.get_layer(LOGITS)]
    )
    head.compile(
        optimizer=keras.optimizers.Adam(recipe.head_learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=["accuracy"],
    )
    head.fit(
        features.astype(np.float32),
        train.labels,
        sample_weight=weights[train.labels].astype(np.float32),
        batch_size=64,
        epochs=recipe.head_epochs,
        shuffle=True,
        verbose=0,
    )
    log(f"head: done in {time.monotonic() - t0:.0f}s")


def balanced_accuracy(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Mean recall over the classes present in `labels`."""
    predicted = logits.argmax(axis=1)
    recalls = [(predicted[labels == c] == c).mean() for c in range(num_classes) if (labels == c).any()]
    return float(np.mean(recalls))


class BestOnValidation(keras.callbacks.Callback):
    """Scores balanced accuracy on held-out images after each epoch; restores the best at the end.

    Also stops training once `max_minutes` have passed since the start of `fit`.
    """

    def __init__(self, classifier: keras.Model, held_out: ImageSet, log: Log, max_minutes: float | None) -> None:
        super().__init__()
        self.classifier = classifier
        self.held_out = held_out
        self.log = log
        self.max_seconds = None if max_minutes is None else max_minutes * 60.0
        self.best = -1.0
        self.best_epoch = -1
        self.best_weights: list[np.ndarray] | None = None
        self.history: list[dict[str, float]] = []

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logits = predict(logits_model(self.classifier), self.held_out.images)
        score = balanced_accuracy(logits, self.held_out.labels, len(self.held_out.classes))
        elapsed = time.monotonic() - self.started
        loss = (logs or {}).get("loss", float("nan"))
        self.history.append({"epoch": epoch + 1, "loss": float(loss), "val_balanced_accuracy": score})
        self.log(f"epoch {epoch + 1}: loss {loss:.4f} val balanced acc {score:.4f} ({elapsed / 60:.1f} min)")
        if score > self.best:
            self.best, self.best_epoch = score, epoch + 1
            self.best_weights = [np.array(w) for w in self.classifier.get_weights()]
        if self.max_seconds is not None and elapsed > self.max_seconds:
            self.log("time budget reached: stopping")
            self.classifier.stop_training = True

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        if self.best_weights is not None:
            self.classifier.set_weights(self.best_weights)
            self.log(f"restored epoch {self.best_epoch} (val balanced acc {self.best:.4f})")


def fine_tune(model: keras.Model, train: ImageSet, held_out: ImageSet, recipe: Recipe, log: Log) -> list[dict[str, float]]:
    """Stage 2 (see module doc). Returns the per-epoch history; `model` ends at the best epoch."""
    set_backbone_trainable(model, True, first_trainable=recipe.first_trainable)
    total = recipe.epochs * recipe.steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(total - recipe.warmup_steps, 1), warmup_target=recipe.learning_rate,
        warmup_steps=recipe.warmup_steps,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=recipe.weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(),
    )
    stream = training_stream(
        train.images, train.labels, len(train.classes),
        batch_size=recipe.batch_size, power=recipe.sampling_power, seed=recipe.seed,
    )
    best = BestOnValidation(model, held_out, log, recipe.max_minutes)
    log(f"fine-tune: {model.count_params():,} params, {_trainable(model):,} trainable, {total} steps")
    model.fit(stream, epochs=recipe.epochs, steps_per_epoch=recipe.steps_per_epoch, callbacks=[best], verbose=0,
              shuffle=False)  # the stream is shuffled per class already
    set_backbone_trainable(model, False)
    return best.history


def _trainable(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def held_out_logits(model: keras.Model, held_out: ImageSet) -> np.ndarray:
    """Uncalibrated logits of `model` on `held_out` (for temperature fitting)."""
    return predict(logits_model(model), held_out.images)
