"""The serving benchmark's own parts: the naive baselines answer, the load generator counts, the
back-to-back summary takes each column's median."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from pathlib import Path

import pytest

from bench.loadgen import BOUNDARY, drive, multipart
from bench.serve import README_END, README_START, Pair, format_median, write_readme
from tests.support.processes import free_port, running, wait_http

REPO = Path(__file__).resolve().parent.parent
HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


@pytest.mark.parametrize("framework", ["fastapi", "aiohttp"])
def test_a_naive_server_answers_under_load(framework: str, tiny_model_dir: Path,
                                           fixture_images: dict[str, list[Path]], tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, str(REPO / "bench" / "naive_server.py"), str(tiny_model_dir),
               "--port", str(port), "--framework", framework]
    images = [paths[0].read_bytes() for paths in fixture_images.values()]
    url = f"http://127.0.0.1:{port}/predict"
    with running(command, log=tmp_path / "naive.log") as proc:
        wait_http(f"http://127.0.0.1:{port}/livez", proc=proc)
        request = urllib.request.Request(url, data=multipart(images[0]), headers=HEADERS)
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        result = asyncio.run(drive(url, images, clients=4, seconds=1.5, warmup_s=0.5))
    assert answer["label"] in json.loads((tiny_model_dir / "manifest.json").read_text())["classes"]
    assert 0 <= answer["confidence"] <= 1
    assert result.errors == 0, result.error_kinds
    assert result.ok > 0 and result.rate > 0


def test_the_summary_row_is_each_columns_median() -> None:
    pairs = [Pair(100, 80, 10, 20), Pair(120, 90, 20, 15), Pair(110, 70, 14, 14)]
    assert format_median(pairs) == "| median | 110.0 | 80.0 | 14.0 | 15.0 | 0.75 | 5.0 | 5.0 |"


def test_the_report_replaces_only_the_readme_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{README_START}\nold table\n{README_END}\nafter\n")
    write_readme(readme, "Command: `x`\n\n| new | table |")
    assert readme.read_text() == (f"# Title\n\nbefore\n{README_START}\nCommand: `x`\n\n| new | table |\n"
                                  f"{README_END}\nafter\n")
    write_readme(readme, "again")  # idempotent: the markers stay
    assert readme.read_text().count(README_START) == 1 and "again" in readme.read_text()


def test_a_readme_without_the_block_is_refused(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n")
    with pytest.raises(SystemExit, match="no <!-- serving-benchmark:start -->"):
        write_readme(readme, "table")
    assert readme.read_text() == "# Title\n"
