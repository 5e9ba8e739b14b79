"""Write the hostile upload corpus (tests/fixtures/hostile/) and its manifest of expected outcomes.

    .venv/bin/python tools/make_hostile_corpus.py [OUT_DIR]

Each file is small: a bomb here claims a lot and expands a little. The large one of the audit
(a 1.9 MB zip of 100 x 20 MB members) is made at test time by `zip_bomb`, which the tests
import. `manifest.json` lists every file with the name it is uploaded under and its outcome
(`stored`, `rejected:<code>`, or one of those per member, in order, for a zip), under the
ingest settings in its `settings` (a smaller archive cap, so a small file can cross it).
"""

from __future__ import annotations

import io
import json
import struct
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "hostile"
#: A zip member that looks like a JPEG to a format sniffer, so it has to be expanded to be judged.
JPEG_MAGIC = b"\xff\xd8\xff\xe0"
CORPUS_SETTINGS = {"max_zip_bytes": 32 * 1024 * 1024}
HTML = b"<html><body><script>alert(document.cookie)</script></body></html>"


def noise_image(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (64, 48)) -> bytes:
    """A small image of seeded noise: distinct bytes per seed, so each one is stored, not a duplicate."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I",
                                                                    zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int, height: int) -> bytes:
    """A valid-looking PNG whose header claims `width` x `height` RGB pixels; ~70 bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b""))


def zip_of(members: dict[str, bytes]) -> bytes:
    """A deflated zip of `members`, byte for byte the same on every run (fixed timestamps)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def zip_bomb(members: int, member_bytes: int, folder: str = "melanoma") -> bytes:
    """`members` files of `member_bytes` each (JPEG magic, then zeros), ~1/1000 of that zipped.

    The member is deflated once and its bytes repeated under each name (a plain, valid zip, as
    `zipfile` would write it, but made in milliseconds instead of seconds)."""
    body = JPEG_MAGIC + bytes(member_bytes - len(JPEG_MAGIC))
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = packer.compress(body) + packer.flush()
    crc = zlib.crc32(body) & 0xFFFFFFFF
    dos_time, dos_date = 0, (2024 - 1980) << 9 | 1 << 5 | 1
    local, central = bytearray(), bytearray()
    for number in range(members):
        name = f"{folder}/bomb-{number:03d}.jpg".encode()
        fields = struct.pack("<HHHHHIIIHH", 20, 0, 8, dos_time, dos_date, crc, len(packed), member_bytes,
                             len(name), 0)
        central += struct.pack("<IH", 0x02014B50, 20) + fields + struct.pack("<HHHII", 0, 0, 0, 0, len(local))
        central += name
        local += struct.pack("<I", 0x04034B50) + fields + name + packed
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, members, members, len(central), len(local), 0)
    return bytes(local + central + end)


def corpus() -> list[tuple[dict[str, Any], bytes]]:
    """(manifest entry, file bytes) for every file of the corpus."""
    truncated = noise_image(4, size=(256, 192))
    gif = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(gif, "GIF")
    png_trailing = noise_image(9, fmt="PNG") + HTML
    bomb_members = 8
    cap_members = CORPUS_SETTINGS["max_zip_bytes"] // (8 * 1024 * 1024)
    entries: list[tuple[dict[str, Any], bytes]] = [
        ({"file": "valid.jpg", "name": "melanoma_valid.jpg", "expected": "stored",
          "why": "a plain labelled JPEG is stored"}, noise_image(1)),
        ({"file": "appended-html.jpg", "name": "melanoma_polyglot.jpg", "expected": "stored",
          "why": "stored cut at the end-of-image marker: the HTML after it is gone"}, noise_image(2) + HTML),
        ({"file": "appended-zip.jpg", "name": "melanocytic_nevi_polyglot.jpg", "expected": "stored",
          "why": "stored cut at the end-of-image marker: the zip after it is gone"},
         noise_image(3) + zip_of({"payload.html": HTML})),
        ({"file": "png-trailing.png", "name": "eczema_trailing.png", "expected": "stored",
          "why": "re-encoded, which drops the HTML appended after IEND"}, png_trailing),
        ({"file": "truncated.jpg", "name": "melanoma_truncated.jpg", "expected": "rejected:corrupt_image",
          "why": "cut in the middle of its image data"}, truncated[: len(truncated) // 2]),
        ({"file": "animation.gif", "name": "melanoma_anim.gif", "expected": "rejected:unsupported_format",
          "why": "GIF is not accepted (JPEG, PNG, WebP are)"}, gif.getvalue()),
        ({"file": "not-an-image.jpg", "name": "melanoma_text.jpg", "expected": "rejected:not_an_image",
          "why": "text named .jpg: formats come from bytes, never names"}, b"just some text, not a JPEG\n"),
        ({"file": "empty.jpg", "name": "melanoma_empty.jpg", "expected": "rejected:empty_file",
          "why": "zero bytes"}, b""),
        ({"file": "bomb-50mp.png", "name": "melanoma_50mp.png", "expected": "rejected:too_many_pixels",
          "why": "claims 7072x7072 (50 MP), over the 40 MP budget, refused from its header"},
          bomb_png(7072, 7072)),
        ({"file": "bomb-100mp.png", "name": "melanoma_100mp.png", "expected": "rejected:too_many_pixels",
          "why": "claims 10000x10000: Pillow's DecompressionBombWarning band, once an uncaught 500"},
         bomb_png(10_000, 10_000)),
        ({"file": "bomb-10gp.png", "name": "melanoma_10gp.png", "expected": "rejected:too_many_pixels",
          "why": "claims 100000x100000 (Pillow's DecompressionBombError band)"}, bomb_png(100_000, 100_000)),
        ({"file": "traversal.jpg", "name": "../../../etc/melanoma_passwd.jpg", "expected": "stored",
          "why": "a name is a label source, never a path: stored content-addressed as melanoma"},
          noise_image(5)),
        ({"file": "xss.jpg", "name": "<img src=x onerror=alert(1)>.jpg", "expected": "rejected:unknown_class",
          "why": "markup in a name is data; no class prefix, so no label"}, noise_image(6)),
        ({"file": "xss-labelled.jpg", "name": "melanoma_<img src=x onerror=alert(1)>.jpg",
          "expected": "stored",
          "why": "markup in a name is data; the class prefix labels it"}, noise_image(7)),
        ({"file": "traversal.zip", "name": "traversal.zip", "expected": ["stored", "rejected:not_an_image"],
          "why": "member paths are labels only ('../../melanoma/' is the melanoma folder); __MACOSX skipped"},
         zip_of({"../../melanoma/evil.jpg": noise_image(8), "/abs/basal_cell_carcinoma/notes.jpg": b"text",
                 "__MACOSX/._evil.jpg": b"resource fork"})),
        ({"file": "zip-bomb.zip", "name": "zip-bomb.zip",
          "expected": ["rejected:corrupt_image"] * cap_members
          + ["rejected:archive_too_large"] * (bomb_members - cap_members),
          "why": f"{bomb_members} x 8 MiB members: expanded one at a time until the 32 MiB archive cap, "
                 "the rest refused unread"}, zip_bomb(bomb_members, 8 * 1024 * 1024)),
    ]
    return entries


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    entries = corpus()
    for entry, data in entries:
        (out / entry["file"]).write_bytes(data)
    manifest = {"settings": CORPUS_SETTINGS, "files": [entry for entry, _ in entries]}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{len(entries)} files in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
