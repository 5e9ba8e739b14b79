"""The Keras EfficientNet-Lite0/1/2 port: architecture, PyTorch weight mapping, committed weights.

The mapping is tested without torch: a fake state dict of numpy arrays with the reference's key
names and PyTorch layouts goes through `lite_arrays_from_torch`, and the Keras layers must then
compute what PyTorch's cross-correlation with TF "same" padding computes. For Lite1 and Lite2
the keys and shapes are the reference's own (tests/fixtures/efficientnet_lite_reference_shapes.json,
dumped from `efficientnet-lite-pytorch` 0.1.0's `EfficientNet.from_name("efficientnet-lite<N>")`
state dict in the conversion venv).
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from trainer_service.ml.backbones import (
    LITE0_WEIGHTS,
    assign_weights,
    build_backbone,
    efficientnet_lite,
    efficientnet_lite0,
    lite_arrays_from_torch,
    load_weights_npz,
    save_weights_npz,
    weights_file,
)

REFERENCE_SHAPES = Path(__file__).resolve().parent.parent / "fixtures/efficientnet_lite_reference_shapes.json"

# The reference's per-stage (repeats, kernel, expand, in, out) for Lite0, written out by hand
# from efficientnet_lite_builder.py so the test does not reuse the code under test.
STAGES = [(1, 3, 1, 32, 16), (2, 3, 6, 16, 24), (2, 5, 6, 24, 40), (3, 3, 6, 40, 80),
          (3, 5, 6, 80, 112), (4, 5, 6, 112, 192), (1, 3, 6, 192, 320)]


def fake_state_dict(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random arrays under every key of lukemelas' Lite0 state dict, PyTorch layouts."""
    state: dict[str, np.ndarray] = {}

    def bn(prefix: str, n: int) -> None:
        state[f"{prefix}.weight"] = rng.normal(1, 0.1, n).astype(np.float32)
        state[f"{prefix}.bias"] = rng.normal(0, 0.1, n).astype(np.float32)
        state[f"{prefix}.running_mean"] = rng.normal(0, 0.1, n).astype(np.float32)
        state[f"{prefix}.running_var"] = rng.uniform(0.5, 1.5, n).astype(np.float32)

    def conv(key: str, shape: tuple[int, ...]) -> None:
        state[key] = rng.normal(0, 0.1, shape).astype(np.float32)

    conv("_conv_stem.weight", (32, 3, 3, 3))
    bn("_bn0", 32)
    index = 0
    for repeats, k, e, c_in, c_out in STAGES:
        for r in range(repeats):
            cin = c_in if r == 0 else c_out
            hidden = cin * e
            p = f"_blocks.{index}"
            if e != 1:
                conv(f"{p}._expand_conv.weight", (hidden, cin, 1, 1))
                bn(f"{p}._bn0", hidden)
            conv(f"{p}._depthwise_conv.weight", (hidden, 1, k, k))
            bn(f"{p}._bn1", hidden)
            conv(f"{p}._project_conv.weight", (c_out, hidden, 1, 1))
            bn(f"{p}._bn2", c_out)
            index += 1
    conv("_conv_head.weight", (1280, 320, 1, 1))
    bn("_bn1", 1280)
    conv("_fc.weight", (1000, 1280))
    state["_fc.bias"] = rng.normal(0, 0.1, 1000).astype(np.float32)
    return state


def with_fc(backbone: keras.Model) -> keras.Model:
    x = keras.layers.GlobalAveragePooling2D()(backbone.output)
    return keras.Model(backbone.input, keras.layers.Dense(1000, name="fc")(x))


def torch_conv_same(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """PyTorch-layout (O, I, kh, kw) cross-correlation of NHWC `x` with TF "same" padding."""
    _, h, wd, _ = x.shape
    k = w.shape[2]
    oh, ow = -(-h // stride), -(-wd // stride)
    pad_h, pad_w = max((oh - 1) * stride + k - h, 0), max((ow - 1) * stride + k - wd, 0)
    xp = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out = np.zeros((x.shape[0], oh, ow, w.shape[0]))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * stride : i * stride + k, j * stride : j * stride + k, :]  # N k k I
            out[:, i, j, :] = np.einsum("nhwi,oihw->no", patch, w)
    return out


def test_fake_torch_state_maps_onto_every_keras_weight() -> None:
    state = fake_state_dict(np.random.default_rng(0))
    arrays = lite_arrays_from_torch(state)
    model = with_fc(efficientnet_lite0((32, 32)))
    assign_weights(model, arrays)  # raises on any missing key or wrong shape
    assert len(arrays) == len(state) == len(model.weights)
    assert sum(int(np.prod(w.shape)) for w in model.weights) == sum(a.size for a in state.values())
    np.testing.assert_array_equal(model.get_layer("fc").kernel.numpy(), state["_fc.weight"].T)
    bn = model.get_layer("block3_dw_bn")
    np.testing.assert_array_equal(bn.moving_variance.numpy(), state["_blocks.3._bn1.running_var"])


def test_mapped_convolutions_compute_what_pytorch_computes() -> None:
    state = fake_state_dict(np.random.default_rng(1))
    model = efficientnet_lite0((15, 17))  # odd sizes exercise the asymmetric "same" padding
    assign_weights(model, lite_arrays_from_torch(state))
    x = np.random.default_rng(2).uniform(-1, 1, (2, 15, 17, 3)).astype(np.float32)

    stem = model.get_layer("stem_conv")
    np.testing.assert_allclose(stem(x).numpy(), torch_conv_same(x, state["_conv_stem.weight"], 2), atol=1e-5)

    dw = model.get_layer("block1_dw_conv")  # 3x3 depthwise, stride 2, 96 channels
    h = np.random.default_rng(3).normal(size=(1, 9, 8, 96)).astype(np.float32)
    w = state["_blocks.1._depthwise_conv.weight"]
    expected = np.concatenate(
        [torch_conv_same(h[..., c : c + 1], w[c : c + 1], 2) for c in range(96)], axis=-1
    )
    np.testing.assert_allclose(dw(h).numpy(), expected, atol=1e-5)

    project = model.get_layer("block5_project_conv")
    g = np.random.default_rng(4).normal(size=(1, 3, 3, 240)).astype(np.float32)
    np.testing.assert_allclose(
        project(g).numpy(), torch_conv_same(g, state["_blocks.5._project_conv.weight"], 1), atol=1e-4
    )


def test_lite0_shape_and_parameter_count() -> None:
    model = efficientnet_lite0((128, 96))
    assert model.output_shape == (None, 4, 3, 1280)
    # 3,413,024 = the reference's 4,652,008 parameters + 42,016 BatchNorm running statistics
    # (which Keras counts as weights) - the 1,281,000 of the classifier.
    assert model.count_params() == 3_413_024
    assert {type(layer).__module__.split(".")[1] for layer in model.layers} == {"src"}  # built-ins only


def test_npz_round_trip_and_missing_weights_rejected(tmp_path: Path) -> None:
    source = efficientnet_lite0((32, 32))
    path = tmp_path / "w.npz"
    save_weights_npz(source, path)
    target = efficientnet_lite0((32, 32))
    load_weights_npz(target, path)
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(source(x).numpy(), target(x).numpy())
    with np.load(path) as arrays:
        partial = {k: arrays[k] for k in arrays.files if not k.startswith("head_bn")}
    with pytest.raises(KeyError, match="head_bn"):
        assign_weights(target, partial)


def test_committed_imagenet_backbone_loads_and_is_not_random() -> None:
    assert LITE0_WEIGHTS.is_file(), "run tools/convert_efficientnet_lite.py --variant lite0"
    pretrained = build_backbone("efficientnet_lite0", (64, 64))
    stem = pretrained.get_layer("stem_bn").moving_variance.numpy()
    assert not np.allclose(stem, 1.0)  # fresh BatchNorm has variance 1
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    features = pretrained(x).numpy()
    assert features.shape == (2, 2, 2, 1280)
    assert np.isfinite(features).all() and features.min() >= 0.0 and features.max() <= 6.0


def test_unknown_backbone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet9000", (64, 64))


def test_mobilenet_v2_option_builds_offline_without_weights(tmp_path: Path) -> None:
    from trainer_service.ml.network import build_classifier

    backbone = build_backbone("mobilenet_v2", (32, 32), pretrained=False)  # imagenet=True downloads
    model = build_classifier(backbone, 3)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-5)


def reference_state(name: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random arrays under every key of the reference's state dict of `name`, at its shapes."""
    shapes = json.loads(REFERENCE_SHAPES.read_text())[name]
    return {key: (rng.uniform(0.5, 1.5, shape) if key.endswith("running_var")  # variances are positive
                  else rng.normal(0, 0.1, shape)).astype(np.float32) for key, shape in shapes.items()}


# From the reference in the conversion venv: sum(p.numel() for p in model.parameters()) of
# EfficientNet.from_name("efficientnet-lite1" / "-lite2"), 1000-class classifier included; the
# headless Keras count adds the BatchNorm running statistics (53,664 / 58,096), which Keras counts
# as weights, and drops the classifier's 1,281,000.
REFERENCE_PARAMS = {"efficientnet_lite1": (5_416_680, 4_189_344),
                    "efficientnet_lite2": (6_092_072, 4_869_168)}


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_lite1_and_lite2_ports_take_every_reference_weight(name: str) -> None:
    state = reference_state(name, np.random.default_rng(0))
    model = with_fc(efficientnet_lite(name, (64, 64)))
    assign_weights(model, lite_arrays_from_torch(state, name))  # raises on a missing key or wrong shape
    assert len(model.weights) == len(state)
    reference_params, headless = REFERENCE_PARAMS[name]
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == reference_params
    assert efficientnet_lite(name).count_params() == headless
    np.testing.assert_array_equal(model.get_layer("block20_project_bn").moving_mean.numpy(),
                                  state["_blocks.20._bn2.running_mean"])
    x = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    assert np.isfinite(model(x).numpy()).all()


def test_lite2_weights_are_found_where_the_converter_writes_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import trainer_service.ml.backbones as backbones

    monkeypatch.setattr(backbones, "_BACKBONE_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="convert_efficientnet_lite.py --variant lite2"):
        build_backbone("efficientnet_lite2", (32, 32))
    written = efficientnet_lite("efficientnet_lite2", (32, 32))
    save_weights_npz(written, weights_file("efficientnet_lite2"), dtype=np.float16)
    loaded = build_backbone("efficientnet_lite2", (32, 32))
    assert loaded.output_shape == (None, 1, 1, 1280)
    np.testing.assert_array_equal(loaded.get_layer("block20_dw_conv").kernel.numpy(),
                                  written.get_layer("block20_dw_conv").kernel.numpy().astype(np.float16))


def test_float16_weight_files_upcast_on_load(tmp_path: Path) -> None:
    source = efficientnet_lite("efficientnet_lite1", (32, 32))
    save_weights_npz(source, tmp_path / "w16.npz", dtype=np.float16)
    with np.load(tmp_path / "w16.npz") as arrays:
        assert {arrays[k].dtype for k in arrays.files} == {np.dtype(np.float16)}
    target = efficientnet_lite("efficientnet_lite1", (32, 32))
    load_weights_npz(target, tmp_path / "w16.npz")
    kernel = target.get_layer("block7_expand_conv").kernel
    assert kernel.dtype == "float32"
    expected = source.get_layer("block7_expand_conv").kernel.numpy().astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(kernel.numpy(), expected)


def test_the_trainer_accepts_the_lite_backbones() -> None:
    from trainer_service.commands.cli import train_parser

    for name in ("efficientnet_lite1", "efficientnet_lite2"):
        args = train_parser().parse_args(["data", "--out", "o", "--backbone", name])
        assert args.backbone == name
