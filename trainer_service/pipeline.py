"""tf.data input pipelines over decoded uint8 images: class-rebalanced sampling and augmentation.

Augmentation suits dermoscopy, where a lesion has no up or left: flips, 90-degree turns (square
inputs only), a mild zoom and a small colour jitter. It runs per batch in TensorFlow and yields
float32 pixels in [0, 255], the model's input contract.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def class_sampling(labels: np.ndarray, num_classes: int, power: float) -> tuple[np.ndarray, np.ndarray]:
    """(sampling probability per class, loss weight per class) for counts**power sampling.

    power=1 keeps the natural mix, power=0 samples classes equally. The weights make
    probability * weight equal across classes, so the expected loss is class-balanced whatever
    the sampling; they average 1 over the sampled stream. Classes with no image get 0.
    """
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = counts > 0
    probs = np.where(present, np.power(np.maximum(counts, 1.0), power), 0.0)
    probs /= probs.sum()
    weights = np.where(present, 1.0 / np.maximum(probs, 1e-12), 0.0)
    weights /= float((probs * weights).sum())
    return probs, weights


def augment(images: tf.Tensor, *, rotate: bool) -> tf.Tensor:
    """Randomly flip, turn (if `rotate`), zoom (crop 80-100 %) and colour-jitter a float batch."""
    images = tf.image.random_flip_left_right(tf.image.random_flip_up_down(images))
    batch = tf.shape(images)[0]
    size = tf.shape(images)[1:3]
    if rotate:
        images = tf.image.rot90(images, k=tf.random.uniform([], 0, 4, dtype=tf.int32))
    scale = tf.random.uniform([batch, 1], 0.8, 1.0)
    offset = tf.random.uniform([batch, 2], 0.0, 1.0) * (1.0 - scale)
    boxes = tf.concat([offset, offset + scale], axis=1)
    images = tf.image.crop_and_resize(images, boxes, tf.range(batch), size)
    brightness = tf.random.uniform([batch, 1, 1, 1], -20.0, 20.0)
    contrast = tf.random.uniform([batch, 1, 1, 1], 0.85, 1.15)
    saturation = tf.random.uniform([batch, 1, 1, 1], 0.85, 1.15)
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    grey = tf.reduce_mean(images, axis=3, keepdims=True)
    images = grey + (images - grey) * saturation
    images = mean + (images - mean) * contrast + brightness
    return tf.clip_by_value(images, 0.0, 255.0)


def training_stream(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    batch_size: int,
    power: float = 0.5,
    seed: int = 0,
) -> tf.data.Dataset:
    """An endless stream of augmented (pixels, label, weight) batches, rebalanced by `power`.

    See `class_sampling`. `images` is uint8 (n, h, w, 3); the stream never ends, so pass
    `steps_per_epoch` to `fit`.
    """
    probs, weights = class_sampling(labels, num_classes, power)
    pixels = tf.constant(images)
    per_class = []
    chosen = []
    for label in range(num_classes):
        index = np.flatnonzero(labels == label)
        if len(index):
            ds = tf.data.Dataset.from_tensor_slices(index.astype(np.int64))
            per_class.append(ds.shuffle(len(index), seed=seed + label).repeat())
            chosen.append(probs[label])
    mix = tf.data.Dataset.sample_from_datasets(per_class, weights=list(chosen), seed=seed)
    label_table = tf.constant(labels.astype(np.int32))
    weight_table = tf.constant(weights.astype(np.float32))
    square = images.shape[1] == images.shape[2]

    def batch_of(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        y = tf.gather(label_table, index)
        x = augment(tf.cast(tf.gather(pixels, index), tf.float32), rotate=square)
        return x, y, tf.gather(weight_table, y)

    return mix.batch(batch_size).map(batch_of, num_parallel_calls=1).prefetch(2)


def eval_stream(images: np.ndarray, *, batch_size: int) -> tf.data.Dataset:
    """Batches of float32 pixels in order, without augmentation."""
    ds = tf.data.Dataset.from_tensor_slices(images)
    return ds.batch(batch_size).map(lambda x: tf.cast(x, tf.float32)).prefetch(2)
