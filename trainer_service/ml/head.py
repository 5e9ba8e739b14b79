"""The classifier head fitted on cached embeddings: class-balanced softmax regression."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from trainer_service.ml.pipeline import class_sampling, strata_sampling


def toward(start: np.ndarray, strength: float, columns: np.ndarray) -> Callable[[object], object]:
    """An L2 penalty on the distance from `start` (L2-SP, Li et al. 2018) over the output `columns`
    weighted 1 (the classes the current head knows; a new class's column is free): the head may
    move only as far as the data pull it, so a small catalog cannot wipe out what it knows."""
    anchor = keras.ops.convert_to_tensor(start)
    mask = keras.ops.convert_to_tensor(columns.astype(np.float32))

    def penalty(weights: object) -> object:
        return strength * keras.ops.sum(mask * keras.ops.square(weights - anchor))

    return penalty


def set_cross_entropy_from_logits(admissible: np.ndarray) -> Callable[[object, object], object]:
    """`pipeline.set_cross_entropy` on logits: -log of the summed softmax probability of the outputs
    `admissible` allows for each label (a parent-level label, e.g. HAM10000's benign keratosis, is
    no evidence against its child, seborrheic keratosis), computed stably as a difference of
    log-sum-exps."""
    table = keras.ops.convert_to_tensor(np.where(admissible > 0, 0.0, -1e9).astype(np.float32))

    def loss(labels: object, logits: object) -> object:
        mask = keras.ops.take(table, keras.ops.cast(keras.ops.reshape(labels, (-1,)), "int32"), axis=0)
        return keras.ops.logsumexp(logits, axis=-1) - keras.ops.logsumexp(logits + mask, axis=-1)

    return loss


def fit_head(features: np.ndarray, labels: np.ndarray, num_classes: int, *, epochs: int,
             init: tuple[np.ndarray, np.ndarray] | None = None,
             on_epoch: Callable[[int, dict[str, float]], None] = lambda epoch, logs: None,
             anchor_strength: float = 0.0, anchored: np.ndarray | None = None, learning_rate: float = 1e-3,
             batch_size: int = 256, strata: np.ndarray | None = None, admissible: np.ndarray | None = None,
             validation: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced softmax regression on `features`; returns the Dense (kernel, bias). The one
    head trainer: the base recipe's stage 1 and every head-only retrain use it.

    With `init`, training starts from it and (with `anchor_strength` > 0) each step adds
    `anchor_strength` x the squared distance from it, over the `anchored` classes (0/1 per class,
    default all), to the batch's mean loss. The batch is at most `batch_size` and small enough
    that a small catalog still takes several steps an epoch. With `validation` (features, labels)
    each epoch's logs also carry `val_loss` and `val_accuracy` on it (unweighted), for progress
    reports; it plays no part in the fit. With `strata` (one integer per image: its source times
    the classes plus its label) the loss is balanced between the sources inside each class too
    (`pipeline.strata_sampling`): a hundred uploads of a class weigh as much as the thousands of
    one public set. With `admissible` (`shared.taxonomy.admissible` of the classes) the loss is the
    label-set cross-entropy the base recipe trains with (`set_cross_entropy_from_logits`).
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
    if strata is None:
        _, balance = class_sampling(labels, num_classes, power=1.0)
        weights = balance[labels]
    else:
        _, balance = strata_sampling(labels, strata, int(strata.max()) + 1, power=1.0)
        weights = balance[strata]
    head.compile(optimizer=keras.optimizers.Adam(learning_rate),
                 loss=(keras.losses.SparseCategoricalCrossentropy(from_logits=True) if admissible is None
                       else set_cross_entropy_from_logits(admissible)),
                 metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    callback = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: on_epoch(epoch + 1, {k: float(v) for k, v in (logs or {}).items()}))
    head.fit(features, labels, sample_weight=weights.astype(np.float32), epochs=epochs,
             batch_size=int(min(batch_size, max(16, len(labels) // 8))), verbose=0, callbacks=[callback],
             shuffle=True, validation_data=validation)
    kernel, bias = dense.get_weights()
    return kernel, bias
