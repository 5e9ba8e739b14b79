"""Feature extractors for the classifier: EfficientNet-Lite0/1/2 (built here) and MobileNetV2.

Every backbone is a `keras.Model` that takes float32 RGB pixels in [0, 255] of shape
(batch, height, width, 3), scales them itself (a `Rescaling` layer) and returns the last
feature map. Only built-in Keras layers are used, so any model that contains a backbone loads
with plain `keras.saving.load_model` and no custom objects.

EfficientNet-Lite is EfficientNet without squeeze-excite, with ReLU6 and a fixed stem (32) and
head (1280); Lite1 and Lite2 scale Lite0's block widths and repeats by the reference's rules,
except the first and last stage's repeats, which stay fixed (`fix_head_stem`). TensorFlow "same"
padding (pad more at the bottom/right on stride 2) is what the reference implementation uses,
and Keras `padding="same"` is exactly that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
from keras import layers

from shared.settings import REPO_ROOT

_BACKBONE_DIR = REPO_ROOT / "models/backbones"
BN_EPSILON = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280


class Variant(NamedTuple):
    """Compound-scaling coefficients of one EfficientNet-Lite (efficientnet_lite_builder.py)."""

    width: float
    depth: float
    resolution: int  # the reference's ImageNet input size, where its parity is checked


#: EfficientNet-Lite variants built here, by backbone name.
LITE_VARIANTS: dict[str, Variant] = {
    "efficientnet_lite0": Variant(1.0, 1.0, 224),
    "efficientnet_lite1": Variant(1.0, 1.1, 240),
    "efficientnet_lite2": Variant(1.1, 1.2, 260),
}
#: Backbone names the trainer accepts.
BACKBONES: tuple[str, ...] = (*LITE_VARIANTS, "mobilenet_v2")


def weights_file(name: str) -> Path:
    """Where the committed ImageNet weights of Lite backbone `name` live (may not exist)."""
    return _BACKBONE_DIR / f"{name}_imagenet.npz"


#: Committed ImageNet weights of the headless Lite0 backbone (see models/backbones/NOTICE.md).
LITE0_WEIGHTS = weights_file("efficientnet_lite0")


class Stage(NamedTuple):
    """One stage of MBConv blocks: the first block may stride, the rest keep the size."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


#: EfficientNet-Lite0 stages (efficientnet_lite_builder.py: r1_k3_s11_e1_i32_o16, ...), which
#: the other variants scale.
LITE0_STAGES: tuple[Stage, ...] = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """The reference's channel rounding: scale, round to a multiple of `divisor`, never >10% down."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def lite_stages(name: str) -> tuple[Stage, ...]:
    """The stages of Lite variant `name`: widths scaled and rounded, repeats scaled (ceil), except
    that the first stage keeps its 32 input channels and the first and last keep their repeats.
    Raises KeyError for an unknown variant."""
    variant = LITE_VARIANTS[name]
    last = len(LITE0_STAGES) - 1
    return tuple(
        stage._replace(
            repeats=(stage.repeats if i in (0, last) else int(math.ceil(variant.depth * stage.repeats))),
            filters_in=STEM_FILTERS if i == 0 else round_filters(stage.filters_in, variant.width),
            filters_out=round_filters(stage.filters_out, variant.width),
        )
        for i, stage in enumerate(LITE0_STAGES)
    )


class Block(NamedTuple):
    """One MBConv block, numbered as the reference's `_blocks.<number>` (not `index`: a
    NamedTuple field of that name would shadow `tuple.index`)."""

    number: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


def lite_blocks(name: str = "efficientnet_lite0") -> list[Block]:
    """The MBConv blocks of Lite variant `name` in order (16 for Lite0, 21 for Lite1 and Lite2),
    with per-block input filters and stride. Raises KeyError for an unknown variant."""
    blocks: list[Block] = []
    for stage in lite_stages(name):
        for r in range(stage.repeats):
            first = r == 0
            blocks.append(
                Block(
                    len(blocks),
                    stage.kernel,
                    stage.stride if first else 1,
                    stage.expand,
                    stage.filters_in if first else stage.filters_out,
                    stage.filters_out,
                )
            )
    return blocks


def _conv_bn(x: keras.KerasTensor, filters: int, kernel: int, stride: int, name: str, *,
             relu: bool) -> keras.KerasTensor:
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(max_value=6.0, name=f"{name}_relu")(x) if relu else x


def _mbconv(x: keras.KerasTensor, block: Block) -> keras.KerasTensor:
    name = f"block{block.number}"
    inputs = x
    hidden = block.filters_in * block.expand
    if block.expand != 1:
        x = _conv_bn(x, hidden, 1, 1, f"{name}_expand", relu=True)
    x = layers.DepthwiseConv2D(
        block.kernel, strides=block.stride, padding="same", use_bias=False, name=f"{name}_dw_conv"
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(max_value=6.0, name=f"{name}_dw_relu")(x)
    x = _conv_bn(x, block.filters_out, 1, 1, f"{name}_project", relu=False)
    if block.stride == 1 and block.filters_in == block.filters_out:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def efficientnet_lite(name: str, input_size: tuple[int, int] | None = None, *,
                      weights: Path | None = None) -> keras.Model:
    """Headless EfficientNet-Lite `name` (a key of LITE_VARIANTS): pixels in [0, 255] ->
    (batch, h/32, w/32, 1280) features.

    `input_size` is (height, width) or None for any size. `weights` is an `.npz` written by
    `save_weights_npz` (e.g. `weights_file(name)`); None leaves random initialisation.
    Raises KeyError for an unknown variant or if the file lacks a weight the model needs.
    """
    blocks = lite_blocks(name)
    height, width = input_size if input_size is not None else (None, None)
    inputs = keras.Input((height, width, 3), name="pixels")
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="scale")(inputs)
    x = _conv_bn(x, STEM_FILTERS, 3, 2, "stem", relu=True)
    for block in blocks:
        x = _mbconv(x, block)
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "head", relu=True)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        load_weights_npz(model, weights)
    return model


def efficientnet_lite0(input_size: tuple[int, int] | None = None, *,
                       weights: Path | None = None) -> keras.Model:
    """Headless EfficientNet-Lite0 (`efficientnet_lite("efficientnet_lite0", ...)`)."""
    return efficientnet_lite("efficientnet_lite0", input_size, weights=weights)


def mobilenet_v2(input_size: tuple[int, int], *, imagenet: bool = True) -> keras.Model:
    """Headless Keras MobileNetV2 behind its own [0, 255] -> [-1, 1] scaling.

    With `imagenet=True` Keras downloads the ImageNet weights on first use (network needed);
    that is the option for online users, the default backbone needs no network.
    """
    inputs = keras.Input((*input_size, 3), name="pixels")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(inputs)
    base = keras.applications.MobileNetV2(
        input_shape=(*input_size, 3), include_top=False, weights="imagenet" if imagenet else None
    )
    return keras.Model(inputs, base(x), name="mobilenet_v2")


def build_backbone(name: str, input_size: tuple[int, int], *, pretrained: bool = True) -> keras.Model:
    """The backbone called `name` (one of BACKBONES), pretrained unless told otherwise.

    Raises ValueError for an unknown name and FileNotFoundError if a Lite variant's ImageNet
    weights are not in models/backbones/ (only those that fit the serving budget are committed).
    """
    if name in LITE_VARIANTS:
        path = weights_file(name)
        if pretrained and not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: convert it with tools/convert_efficientnet_lite.py "
                f"--variant {name.removeprefix('efficientnet_')} (see models/backbones/NOTICE.md), "
                "or train with --random-init")
        return efficientnet_lite(name, input_size, weights=path if pretrained else None)
    if name == "mobilenet_v2":
        return mobilenet_v2(input_size, imagenet=pretrained)
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def save_weights_npz(model: keras.Model, path: Path, *, dtype: type[np.floating] = np.float32) -> None:
    """Write every weight of `model` to `path` keyed '<layer name>/<variable name>', as `dtype`
    (float16 halves the file; `load_weights_npz` upcasts it)."""
    arrays = {f"{layer.name}/{v.name}": np.asarray(v.numpy()).astype(dtype)
              for layer in model.layers for v in layer.weights}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stubs type **kwds as one keyword, allow_pickle


def load_weights_npz(model: keras.Model, path: Path) -> None:
    """Set the weights of `model` from an `.npz` of `save_weights_npz` (float16 files upcast to
    float32); extra keys are ignored.

    Raises KeyError naming the first weight missing from the file and ValueError on a shape
    mismatch.
    """
    with np.load(path) as arrays:
        assign_weights(model, {key: arrays[key].astype(np.float32, copy=False) for key in arrays.files})


def assign_weights(model: keras.Model, arrays: Mapping[str, np.ndarray]) -> None:
    """Set each weight of `model` from `arrays['<layer name>/<variable name>']`."""
    for layer in model.layers:
        for variable in layer.weights:
            key = f"{layer.name}/{variable.name}"
            if key not in arrays:
                raise KeyError(f"weight {key} missing")
            value = arrays[key]
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"{key}: shape {value.shape} != {tuple(variable.shape)}")
            variable.assign(value)


def _bn_from_torch(prefix: str, state: Mapping[str, np.ndarray], keras_name: str) -> dict[str, np.ndarray]:
    return {
        f"{keras_name}/gamma": state[f"{prefix}.weight"],
        f"{keras_name}/beta": state[f"{prefix}.bias"],
        f"{keras_name}/moving_mean": state[f"{prefix}.running_mean"],
        f"{keras_name}/moving_variance": state[f"{prefix}.running_var"],
    }


def _conv_from_torch(weight: np.ndarray) -> np.ndarray:
    """PyTorch (out, in, kh, kw) -> Keras Conv2D (kh, kw, in, out)."""
    return np.transpose(weight, (2, 3, 1, 0))


def _depthwise_from_torch(weight: np.ndarray) -> np.ndarray:
    """PyTorch depthwise (channels, 1, kh, kw) -> Keras DepthwiseConv2D (kh, kw, channels, 1)."""
    return np.transpose(weight, (2, 3, 0, 1))


def lite_arrays_from_torch(state: Mapping[str, np.ndarray],
                           name: str = "efficientnet_lite0") -> dict[str, np.ndarray]:
    """Map a reference Lite state dict (numpy arrays, lukemelas key names) of variant `name` to
    Keras weight keys.

    The result suits `assign_weights` on `efficientnet_lite(name)`; the classifier (`_fc.*`)
    comes back as 'fc/kernel' and 'fc/bias' when present. Raises KeyError if a weight is missing.
    """
    out: dict[str, np.ndarray] = {"stem_conv/kernel": _conv_from_torch(state["_conv_stem.weight"])}
    out |= _bn_from_torch("_bn0", state, "stem_bn")
    for block in lite_blocks(name):
        src, dst = f"_blocks.{block.number}", f"block{block.number}"
        if block.expand != 1:
            out[f"{dst}_expand_conv/kernel"] = _conv_from_torch(state[f"{src}._expand_conv.weight"])
            out |= _bn_from_torch(f"{src}._bn0", state, f"{dst}_expand_bn")
        out[f"{dst}_dw_conv/kernel"] = _depthwise_from_torch(state[f"{src}._depthwise_conv.weight"])
        out |= _bn_from_torch(f"{src}._bn1", state, f"{dst}_dw_bn")
        out[f"{dst}_project_conv/kernel"] = _conv_from_torch(state[f"{src}._project_conv.weight"])
        out |= _bn_from_torch(f"{src}._bn2", state, f"{dst}_project_bn")
    out["head_conv/kernel"] = _conv_from_torch(state["_conv_head.weight"])
    out |= _bn_from_torch("_bn1", state, "head_bn")
    if "_fc.weight" in state:
        out["fc/kernel"] = np.transpose(state["_fc.weight"])
        out["fc/bias"] = state["_fc.bias"]
    return out
