"""tf.data input pipelines over decoded uint8 images: class-rebalanced sampling and augmentation.

Augmentation suits dermoscopy, where a lesion has no up or left: flips, 90-degree turns (square
inputs only), a mild zoom and a small colour jitter. It runs per batch in TensorFlow and yields
float32 pixels in [0, 255], the model's input contract.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf


def class_sampling(labels: np.ndarray, num_classes: int, power: float) -> tuple[np.ndarray, np.ndarray]:
    """(sampling probability per class, loss weight per class) for counts**power sampling.

    power=1 keeps the natural mix, power=0 samples classes equally. The weights make
    probability * weight equal across classes, so the expected loss is class-balanced whatever
    the sampling; they average 1 over the sampled stream. Classes with no image get 0.
    """
    probs, weights = strata_sampling(labels, labels, num_classes, power)
    return probs, weights


def strata_sampling(
    labels: np.ndarray, strata: np.ndarray, num_strata: int, power: float
) -> tuple[np.ndarray, np.ndarray]:
    """(sampling probability, loss weight) per stratum, for counts**power sampling of strata.

    A stratum is a (source, class) cell. The weights make the expected loss class-balanced, and
    inside a class balanced between the sources that have it: each class carries 1/classes of
    the loss, shared equally by its strata. With one stratum per class this is `class_sampling`.
    Each stratum must hold images of one class only. Strata with no image get 0.
    """
    counts = np.bincount(strata, minlength=num_strata).astype(np.float64)
    present = counts > 0
    probs = np.where(present, np.power(np.maximum(counts, 1.0), power), 0.0)
    probs /= probs.sum()
    class_of = np.full(num_strata, -1)
    class_of[strata] = labels
    classes = np.unique(class_of[present])
    share = np.zeros(num_strata)
    for label in classes:
        cells = present & (class_of == label)
        share[cells] = 1.0 / (len(classes) * cells.sum())
    weights = np.where(present, share / np.maximum(probs, 1e-12), 0.0)
    weights /= float((probs * weights).sum())
    return probs, weights


def set_cross_entropy(admissible: np.ndarray) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """Cross-entropy of a label *set*: -log of the summed probability of the outputs `admissible`
    (a (k, k) 0/1 matrix, `shared.taxonomy.admissible`) allows for each label.

    With the identity matrix it is sparse categorical cross-entropy. A parent-level label (a
    HAM10000 benign keratosis) is satisfied by its children too (a seborrheic keratosis), so it
    is no evidence against them.
    """
    table = tf.constant(admissible, tf.float32)

    def loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        mask = tf.gather(table, tf.cast(tf.reshape(y_true, [-1]), tf.int32))
        return -tf.math.log(tf.clip_by_value(tf.reduce_sum(y_pred * mask, axis=-1), 1e-7, 1.0))

    return loss


def augment(images: tf.Tensor, *, rotate: bool) -> tf.Tensor:
    """Randomly flip, turn (if `rotate`), crop (65-100 % of the area, aspect ratio 3:4 to 4:3,
    resized back, so squashed and unsquashed frames look alike), blur by resolution (half the
    batches are shrunk to 50-100 % and scaled back up) and colour-jitter a float batch."""
    images = tf.image.random_flip_left_right(tf.image.random_flip_up_down(images))
    batch = tf.shape(images)[0]
    size = tf.shape(images)[1:3]
    if rotate:
        images = tf.image.rot90(images, k=tf.random.uniform([], 0, 4, dtype=tf.int32))
    area = tf.random.uniform([batch, 1], 0.65, 1.0)
    ratio = tf.exp(tf.random.uniform([batch, 1], np.log(3 / 4), np.log(4 / 3)))
    height = tf.minimum(tf.sqrt(area / ratio), 1.0)
    width = tf.minimum(tf.sqrt(area * ratio), 1.0)
    top = tf.random.uniform([batch, 1]) * (1.0 - height)
    left = tf.random.uniform([batch, 1]) * (1.0 - width)
    boxes = tf.concat([top, left, top + height, left + width], axis=1)
    images = tf.image.crop_and_resize(images, boxes, tf.range(batch), size)
    shrink = tf.random.uniform([], 0.5, 1.0)
    small = tf.maximum(tf.cast(tf.cast(size, tf.float32) * shrink, tf.int32), 8)
    images = tf.cond(
        tf.random.uniform([]) < 0.5,
        lambda: tf.image.resize(tf.image.resize(images, small, antialias=True), size),
        lambda: images,
    )
    brightness = tf.random.uniform([batch, 1, 1, 1], -20.0, 20.0)
    contrast = tf.random.uniform([batch, 1, 1, 1], 0.85, 1.15)
    saturation = tf.random.uniform([batch, 1, 1, 1], 0.85, 1.15)
    cast = tf.random.uniform([batch, 1, 1, 3], 0.92, 1.08)
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    grey = tf.reduce_mean(images, axis=3, keepdims=True)
    images = grey + (images - grey) * saturation
    images = (mean + (images - mean) * contrast + brightness) * cast
    return tf.clip_by_value(images, 0.0, 255.0)


def training_stream(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    batch_size: int,
    power: float = 0.5,
    seed: int = 0,
    strata: np.ndarray | None = None,
) -> tf.data.Dataset:
    """An endless stream of augmented (pixels, label, weight) batches, rebalanced by `power`.

    See `strata_sampling`; `strata` (one int per image, default: its label) are the cells
    sampled, e.g. source * classes + label. `images` is uint8 (n, h, w, 3); the stream never
    ends, so pass `steps_per_epoch` to `fit`. The same `seed` gives the same stream.
    """
    cells = labels if strata is None else strata
    num_cells = num_classes if strata is None else int(strata.max()) + 1
    probs, weights = strata_sampling(labels, cells, num_cells, power)
    pixels = tf.constant(images)
    per_cell = []
    chosen = []
    for cell in range(num_cells):
        index = np.flatnonzero(cells == cell)
        if len(index):
            ds = tf.data.Dataset.from_tensor_slices(index.astype(np.int64))
            per_cell.append(ds.shuffle(len(index), seed=seed + cell).repeat())
            chosen.append(probs[cell])
    mix = tf.data.Dataset.sample_from_datasets(per_cell, weights=list(chosen), seed=seed)
    label_table = tf.constant(labels.astype(np.int32))
    weight_table = tf.constant(weights[cells].astype(np.float32))
    square = images.shape[1] == images.shape[2]

    def batch_of(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        y = tf.gather(label_table, index)
        x = augment(tf.cast(tf.gather(pixels, index), tf.float32), rotate=square)
        return x, y, tf.gather(weight_table, index)

    return mix.batch(batch_size).map(batch_of, num_parallel_calls=1).prefetch(2)

