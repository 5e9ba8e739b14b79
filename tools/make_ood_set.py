"""Write a set of images that are not dermoscopy, to measure the out-of-distribution detector.

Everything comes from installed packages or is drawn here (no network): scikit-image's bundled
sample photos (and random crops of them), its Labeled Faces in the Wild subset (photos of people:
skin, but not dermoscopy, so out of distribution for this model), and drawn images (text pages,
web-page-like screenshots, circuit-board-like drawings, charts, noise, flat colours). Each kind
goes in its own folder, so the detector can be reported per kind.

    python tools/make_ood_set.py var/ood
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def photos(out: Path, rng: np.random.Generator) -> int:
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    n = 0
    for path in sorted(folder.glob("*")):
        if path.suffix.lower() not in {".png", ".jpg"} or "chessboard" in path.name:
            continue
        image = Image.open(path).convert("RGB")
        image.save(out / f"{path.stem}.png")
        n += 1
        w, h = image.size
        for k in range(4):  # crops: a dermatoscope frames a small field
            side = int(min(w, h) * rng.uniform(0.3, 0.7))
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            image.crop((x, y, x + side, y + side)).save(out / f"{path.stem}-crop{k}.png")
            n += 1
    return n


def faces(out: Path, rng: np.random.Generator, count: int = 60) -> int:
    import skimage.data

    stack = np.load(Path(skimage.data.__file__).parent / "lfw_subset.npy")[:100]  # the 100 faces
    for i in rng.choice(len(stack), size=min(count, len(stack)), replace=False):
        grey = (np.clip(stack[i], 0, 1) * 255).astype(np.uint8)
        tone = np.array([1.0, 0.82, 0.7])  # a skin tone on the grey photo
        rgb = np.clip(grey[..., None] * tone, 0, 255).astype(np.uint8)
        Image.fromarray(rgb).resize((200, 200), Image.Resampling.BICUBIC).save(out / f"face-{i:03d}.png")
    return min(count, len(stack))


def _text_page(rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGB", (400, 300), tuple(int(v) for v in rng.integers(225, 256, 3)))
    draw = ImageDraw.Draw(image)
    y = 12
    while y < 290:
        words = " ".join("".join(chr(int(c)) for c in rng.integers(97, 123, rng.integers(2, 9)))
                         for _ in range(int(rng.integers(4, 9))))
        draw.text((12, y), words, fill=tuple(int(v) for v in rng.integers(0, 90, 3)))
        y += int(rng.integers(12, 20))
    return image


def _web_page(rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGB", (480, 320), (246, 247, 249))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 480, 40), fill=tuple(int(v) for v in rng.integers(20, 120, 3)))
    draw.text((14, 14), "DermaScan", fill=(255, 255, 255))
    for k in range(int(rng.integers(2, 5))):
        x = 14 + k * 115
        draw.rectangle((x, 56, x + 105, 300), fill=(255, 255, 255), outline=(210, 210, 215))
        for j in range(int(rng.integers(3, 8))):
            draw.text((x + 8, 66 + j * 18), f"label {j}: {rng.uniform():.2f}", fill=(40, 40, 40))
        draw.rectangle((x + 8, 250, x + 80, 272), fill=(37, 99, 235))
    return image


def _circuit(rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGB", (300, 300),
                      tuple(int(v) for v in (rng.integers(0, 40), rng.integers(90, 150), 60)))
    draw = ImageDraw.Draw(image)
    for _ in range(60):
        x, y = (int(v) for v in rng.integers(0, 300, 2))
        if rng.uniform() < 0.5:
            draw.line((x, y, x + int(rng.integers(-80, 80)), y), fill=(200, 170, 80), width=2)
        else:
            draw.line((x, y, x, y + int(rng.integers(-80, 80))), fill=(200, 170, 80), width=2)
    for _ in range(12):
        x, y = (int(v) for v in rng.integers(10, 260, 2))
        draw.rectangle((x, y, x + int(rng.integers(15, 40)), y + int(rng.integers(10, 30))),
                       fill=(20, 20, 20))
    return image


def _chart(rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGB", (320, 240), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.line((30, 210, 310, 210), fill=(0, 0, 0))
    draw.line((30, 10, 30, 210), fill=(0, 0, 0))
    bars = rng.uniform(10, 190, int(rng.integers(4, 10)))
    width = 260 // len(bars)
    for k, height in enumerate(bars):
        draw.rectangle((36 + k * width, 210 - height, 30 + (k + 1) * width, 210),
                       fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image


def _noise(rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8))


def _flat(rng: np.random.Generator) -> Image.Image:
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, 200)[:, None, None]
    return Image.fromarray((top * (1 - ramp) + bottom * ramp).repeat(200, axis=1).astype(np.uint8))


DRAWN = {"text": _text_page, "webpage": _web_page, "circuit": _circuit, "chart": _chart, "noise": _noise,
         "flat": _flat}


def drawn(out: Path, rng: np.random.Generator, each: int = 10) -> int:
    for name, draw in DRAWN.items():
        for k in range(each):
            draw(rng).save(out / f"{name}-{k:02d}.png")
    return each * len(DRAWN)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to create (photos/, faces/, drawn/ inside)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    for kind, make in (("photos", photos), ("faces", faces), ("drawn", drawn)):
        folder = args.out / kind
        folder.mkdir(parents=True, exist_ok=True)
        print(f"{kind}: {make(folder, rng)} images in {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
