"""`scripts/base-model.sh`, the shipped model's recipe as one command: every stage's command line
parses, each stage starts from an earlier stage's artifact, the last model made is the shipped
version, and its training evidence is written beside it."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

from shared.settings import REPO_ROOT
from trainer_service.commands import evidence_build, refit, soup
from trainer_service.commands.cli import train_parser


def _stages(tmp_path: Path) -> list[list[str]]:
    done = subprocess.run(["bash", "scripts/base-model.sh", str(tmp_path / "data"), str(tmp_path / "runs")],
                          cwd=REPO_ROOT, env={**os.environ, "DRY_RUN": "1"}, capture_output=True, text=True,
                          check=True, timeout=60)
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing
    return [shlex.split(line) for line in done.stdout.splitlines()]


def test_each_stage_parses_and_starts_from_an_earlier_one(tmp_path: Path) -> None:
    parsers = {"train": train_parser(), "refit": refit.parser(), "soup": soup.parser(),
               "evidence": evidence_build.parser()}
    made: list[Path] = []
    *stages, last = _stages(tmp_path)
    evidence = parsers["evidence"].parse_args(last[4:])
    assert last[3] == "evidence" and evidence.out == evidence.artifact / "evidence.npz"
    for argv in stages:
        assert argv[1:3] == ["-m", "trainer_service"]
        args = parsers[argv[3]].parse_args(argv[4:])
        inputs = ([args.init_from] if argv[3] == "train" and args.init_from else
                  [args.artifact] if argv[3] == "refit" else getattr(args, "artifacts", []))
        assert all(path in made for path in inputs), (argv[3], inputs, made)
        if argv[3] != "train" or args.init_from:  # every stage but the first builds on the ones before
            assert inputs
        made.append(args.out)
    shipped = json.loads((REPO_ROOT / "models" / "base" / "manifest.json").read_text())["version"]
    assert made[-1].name == shipped and evidence.artifact == made[-1]
