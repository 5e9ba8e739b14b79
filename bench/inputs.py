"""What the serving benchmark feeds the system: ~27 KB JPEG uploads and a MobileNetV2 stand-in.

    .venv/bin/python bench/inputs.py OUT_DIR   # writes OUT_DIR/images/*.jpg and OUT_DIR/mobilenetv2/

The images are the committed HAM10000 fixtures (200x150) upscaled to 448x336 and saved at JPEG
quality 95: 19-36 KB, 27 KB on average, close to a phone upload cropped to the lesion. The
stand-in is `keras.applications.MobileNetV2(weights=None)` at 224x224 with 7 outputs: random
weights (its answers mean nothing) but the same compute as the model the issue's reference
figures were taken with, saved as the trainer saves a version (with its LiteRT file).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.manifest import ModelManifest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "ham10000"
CLASSES = ["actinic_keratosis", "basal_cell_carcinoma", "benign_keratosis", "dermatofibroma",
           "melanocytic_nevi", "melanoma", "vascular_lesion"]


def make_images(directory: Path, size: tuple[int, int] = (448, 336), quality: int = 95) -> list[Path]:
    """Upscaled copies of the fixture JPEGs in `directory` (kept if already there)."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sorted(FIXTURES.glob("*/*.jpg")):
        target = directory / f"{source.parent.name}-{source.name}"
        if not target.exists():
            buffer = io.BytesIO()
            Image.open(source).convert("RGB").resize(size, Image.Resampling.BICUBIC).save(
                buffer, "JPEG", quality=quality)
            target.write_bytes(buffer.getvalue())
        written.append(target)
    return written


def make_standin(directory: Path, input_size: int = 224) -> Path:
    """A random-weight MobileNetV2 saved in `directory` as the trainer saves a version
    (`model.keras`, its checked LiteRT file `model.tflite`, `manifest.json`), so that workers serve
    it as they serve a published version, without TensorFlow. Kept if there."""
    manifest_file = directory / "manifest.json"
    if manifest_file.is_file() and ModelManifest.model_validate_json(manifest_file.read_text()).litert:
        return directory
    import shutil

    import keras

    from trainer_service.ml.artifacts import save_artifact

    shutil.rmtree(directory, ignore_errors=True)  # one saved before LiteRT files: made again

    keras.utils.set_random_seed(0)
    inputs = keras.Input((input_size, input_size, 3))
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    backbone = keras.applications.MobileNetV2(
        weights=None, input_shape=(input_size, input_size, 3), classes=len(CLASSES))
    model = keras.Model(inputs, backbone(scaled))
    manifest = ModelManifest(version="mobilenetv2-standin", classes=CLASSES,
                             input_size=(input_size, input_size), backbone="mobilenet_v2 (random weights)")
    return save_artifact(model, manifest, directory)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/dermascan-bench")
    images = make_images(out / "images")
    sizes = [p.stat().st_size for p in images]
    print(f"{len(images)} images, {min(sizes)}-{max(sizes)} bytes, mean {sum(sizes) // len(sizes)}")
    print(make_standin(out / "mobilenetv2"))
