"""tools/make_ood_set.py writes every kind of non-dermoscopic image it promises."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import make_ood_set


def test_the_generator_writes_photos_faces_and_drawings(tmp_path: Path) -> None:
    assert make_ood_set.main([str(tmp_path), "--seed", "1"]) == 0
    counts = {kind: len(list((tmp_path / kind).iterdir())) for kind in ("photos", "faces", "drawn")}
    assert counts["photos"] >= 50 and counts["faces"] == 60 and counts["drawn"] == 60
    for path in sorted((tmp_path / "drawn").iterdir())[::10]:
        with Image.open(path) as image:
            assert min(image.size) >= 32 and image.mode == "RGB"
