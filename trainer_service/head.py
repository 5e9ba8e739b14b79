"""The classifier head fitted on cached embeddings: class-balanced softmax regression."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from trainer_service.pipeline import class_sampling


def toward(start: np.ndarray, strength: float, columns: np.ndarray) -> Callable[[object], object]:
    """An L2 penalty on the distance from `start` (L2-SP, Li et al. 2018) over the output `columns`
    weighted 1 (the classes the current head knows; a new class's column is free): the head may
    move only as far as the data pull it, so a small catalog cannot wipe out what it knows."""
    anchor = keras.ops.convert_to_tensor(start)
    mask = keras.ops.convert_to_tensor(columns.astype(np.float32))

    def penalty(weights: object) -> object:
        return strength * keras.ops.sum(mask * keras.ops.square(weights - anchor))

    return penalty


def fit_head(features: np.ndarray, labels: np.ndarray, num_classes: int, *, epochs: int,
             init: tuple[np.ndarray, np.ndarray] | None = None,
             on_epoch: Callable[[int, dict[str, float]], None] = lambda epoch, logs: None,
             anchor_strength: float = 0.0, anchored: np.ndarray | None = None, learning_rate: float = 1e-3,
             batch_size: int = 256,
             validation: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced softmax regression on `features`; returns the Dense (kernel, bias). The one
    head trainer: the base recipe's stage 1 and every head-only retrain use it.

    With `init`, training starts from it and (with `anchor_strength` > 0) each step adds
    `anchor_strength` x the squared distance from it, over the `anchored` classes (0/1 per class,
    default all), to the batch's mean loss. The batch is at most `batch_size` and small enough
    that a small catalog still takes several steps an epoch. With `validation` (features, labels)
    each epoch's logs also carry `val_loss` and `val_accuracy` on it (unweighted), for progress
    reports; it plays no part in the fit.
    """
    columns = np.ones(num_classes) if anchored is None else anchored
    use_anchor = init is not None and anchor_strength > 0
    dense = keras.layers.Dense(
        num_classes,
        kernel_regularizer=toward(init[0], anchor_strength,
                                  columns[None, :]) if use_anchor and init else None,
        bias_regularizer=toward(init[1], anchor_strength, columns) if use_anchor and init else None)
    head = keras.Sequential([keras.Input((features.shape[1],)), dense])
    if init is not None:
        dense.set_weights(list(init))
    _, balance = class_sampling(labels, num_classes, power=1.0)
    head.compile(optimizer=keras.optimizers.Adam(learning_rate),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    callback = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: on_epoch(epoch + 1, {k: float(v) for k, v in (logs or {}).items()}))
    head.fit(features, labels, sample_weight=balance[labels].astype(np.float32), epochs=epochs,
             batch_size=int(min(batch_size, max(16, len(labels) // 8))), verbose=0, callbacks=[callback],
             shuffle=True, validation_data=validation)
    kernel, bias = dense.get_weights()
    return kernel, bias
