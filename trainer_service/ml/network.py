"""The classifier graph: backbone -> pooled "embedding" -> "logits" -> "temperature" -> softmax.

The saved model takes float32 RGB pixels in [0, 255] (batch, h, w, 3) and returns calibrated
class probabilities (batch, classes): the worker just calls it. Layer names are the contract
other code relies on: "backbone" (the nested feature extractor), "embedding" (pooled features,
the input of head-only retrains), "logits", "temperature" (a Rescaling by 1/T) and
"probabilities".
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

EMBEDDING = "embedding"
LOGITS = "logits"


def build_classifier(
    backbone: keras.Model, num_classes: int, *, dropout: float = 0.2, temperature: float = 1.0
) -> keras.Model:
    """A new classifier head on `backbone` (renamed "backbone"), with fresh Dense weights.

    The input size is the backbone's. Raises ValueError if `num_classes` < 2 or
    `temperature` <= 0.
    """
    if num_classes < 2:
        raise ValueError("a classifier needs at least two classes")
    backbone.name = "backbone"
    inputs = keras.Input(backbone.input_shape[1:], name="pixels")
    features = backbone(inputs)
    embedding = layers.GlobalAveragePooling2D(name=EMBEDDING)(features)
    x = layers.Dropout(dropout, name="head_dropout")(embedding)
    logits = layers.Dense(num_classes, name=LOGITS)(x)
    return _with_temperature(inputs, logits, temperature)


def _with_temperature(inputs: keras.KerasTensor, logits: keras.KerasTensor,
                      temperature: float) -> keras.Model:
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    scaled = layers.Rescaling(1.0 / temperature, name="temperature")(logits)
    probabilities = layers.Softmax(name="probabilities")(scaled)
    return keras.Model(inputs, probabilities, name="dermascan_classifier")


def with_temperature(model: keras.Model, temperature: float) -> keras.Model:
    """The same classifier (shared layers and weights) with calibration temperature `temperature`."""
    return _with_temperature(model.input, model.get_layer(LOGITS).output, temperature)


def without_class_bias(model: keras.Model, class_bias: list[float]) -> keras.Model:
    """Pixels -> logits of a trained `model` with the per-class offsets `class_bias` (baked into
    its logits layer by calibration) taken out of that layer in place: the network as fine-tuning
    left it, to fit operating points again or to train further."""
    dense = model.get_layer(LOGITS)
    kernel, bias = dense.get_weights()
    if class_bias:
        bias = bias - np.asarray(class_bias, np.float32)
    dense.set_weights([kernel, bias])
    return keras.Model(model.input, dense.output)


def temperature_of(model: keras.Model) -> float:
    """The calibration temperature baked into `model`."""
    return 1.0 / float(model.get_layer("temperature").scale)


def logits_model(model: keras.Model) -> keras.Model:
    """Pixels -> uncalibrated logits, sharing `model`'s layers (for fitting the temperature)."""
    return keras.Model(model.input, model.get_layer(LOGITS).output)


def embedding_model(model: keras.Model) -> keras.Model:
    """Pixels -> pooled embedding, sharing `model`'s layers (to cache features for head retrains)."""
    return keras.Model(model.input, model.get_layer(EMBEDDING).output)


def set_backbone_trainable(model: keras.Model, trainable: bool, *,
                           first_trainable: str | None = None) -> None:
    """Freeze or unfreeze the backbone; BatchNorm stays frozen (inference mode) either way.

    With `trainable=True` and `first_trainable` naming a backbone layer, the layers before it
    stay frozen too (the stem's generic edge filters need no retraining). Frozen BatchNorm keeps
    the ImageNet statistics, which small CPU batches would only spoil. Raises ValueError if
    `first_trainable` names no layer of the backbone.
    """
    flat = _flat_layers(model.get_layer("backbone"))
    names = [layer.name for layer in flat]
    if first_trainable is not None and first_trainable not in names:
        raise ValueError(f"the backbone has no layer {first_trainable!r}")
    start = names.index(first_trainable) if first_trainable is not None else 0
    model.get_layer("backbone").trainable = True
    for index, layer in enumerate(flat):
        frozen_bn = isinstance(layer, layers.BatchNormalization)
        layer.trainable = trainable and not frozen_bn and index >= start


def _flat_layers(model: keras.Model) -> list[keras.Layer]:
    out: list[keras.Layer] = []
    for layer in model.layers:
        out += _flat_layers(layer) if isinstance(layer, keras.Model) else [layer]
    return out
