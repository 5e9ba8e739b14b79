"""The serving benchmark's own parts: the naive baselines answer, the load generator counts, the
back-to-back summary takes each column's median, the headline judges the goals on the run's own
figures, the report lands in its doc's block only, and a baseline checkout runs its own code."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from bench.loadgen import BOUNDARY, drive, multipart
from bench.report import BLOCK_END, BLOCK_START, Pair, Row, check_block, format_median, headline, write_block
from bench.servers import module_command
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


def test_the_report_replaces_only_the_docs_block(tmp_path: Path) -> None:
    doc = tmp_path / "serving.md"
    doc.write_text(f"# Title\n\nbefore\n{BLOCK_START}\nold table\n{BLOCK_END}\nafter\n")
    write_block(doc, "Command: `x`\n\n| new | table |")
    assert doc.read_text() == (f"# Title\n\nbefore\n{BLOCK_START}\nCommand: `x`\n\n| new | table |\n"
                               f"{BLOCK_END}\nafter\n")
    write_block(doc, "again")  # idempotent: the markers stay
    assert doc.read_text().count(BLOCK_START) == 1 and "again" in doc.read_text()


def test_a_doc_without_the_block_is_refused_before_the_run(tmp_path: Path) -> None:
    doc = tmp_path / "serving.md"
    doc.write_text("# Title\n")
    with pytest.raises(SystemExit, match="no <!-- serving-benchmark:start -->"):
        check_block(doc)
    with pytest.raises(SystemExit, match="no <!-- serving-benchmark:start -->"):
        check_block(tmp_path / "missing.md")
    with pytest.raises(SystemExit):
        write_block(doc, "table")
    assert doc.read_text() == "# Title\n"


def test_the_headline_judges_the_goals_on_the_runs_own_figures() -> None:
    rows = [Row("DermaScan", 1, 150.0, 8.0, 9, 10, rss_mb=[210.0], ready_s=[1.5]),
            Row("DermaScan", 32, 190.0, 160.0, 170, 180, rss_mb=[230.0], ready_s=[1.5]),
            Row("BentoML 1.4 on LiteRT, 2 worker(s) x 1 thread(s)", 1, 80.0, 12.0, 13, 14),
            Row("BentoML 1.4 on LiteRT, 2 worker(s) x 1 thread(s)", 32, 140.0, 220.0, 230, 240),
            Row("raw sequential, 2 threads, batch 1", 1, 175.0, 5.7, 6, float("nan")),
            Row("naive FastAPI", 1, 10.0, 95.0, 99, 99)]  # no 32-client row: left out
    lines = headline(rows, batch1_rate=175.0, batch1_p50=5.7, limit=217.0, many=32)
    assert "| DermaScan | 150.0 | 8.0 | 190.0 | 0.88 | 230 | 1.5 |" in lines
    assert not any(line.startswith("| naive") for line in lines)
    verdict = next(line for line in lines if line.startswith("- DermaScan"))
    assert "p50 8.0 ms <= 5.7 + 3 ms" in verdict
    assert "0.88 x the raw limit" in verdict and "1.36 x BentoML's best" in verdict
    slower = headline([*rows[2:], Row("DermaScan", 1, 90.0, 9.0, 9, 9), Row("DermaScan", 32, 150.0, 1, 1, 1)],
                      batch1_rate=175.0, batch1_p50=5.7, limit=217.0, many=32)
    assert "p50 9.0 ms > 5.7 + 3 ms" in next(line for line in slower if line.startswith("- DermaScan"))


def test_a_baseline_tree_runs_its_own_modules(tmp_path: Path) -> None:
    (tmp_path / "inference_worker").mkdir()
    (tmp_path / "inference_worker" / "__init__.py").write_text("")
    (tmp_path / "inference_worker" / "__main__.py").write_text("print('baseline', __file__)")
    out = subprocess.run(module_command("inference_worker", tmp_path), cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert out.startswith("baseline") and str(tmp_path) in out
