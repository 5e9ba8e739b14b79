"""The README stays a front door: the two commands first, one request and its answer early, short."""

from __future__ import annotations

import re

from tests.support.processes import REPO

README = (REPO / "README.md").read_text()


def shell_commands(markdown: str) -> list[str]:
    """The commands of `markdown`'s shell code blocks, in order, without comments."""
    blocks = re.findall(r"^```(?:sh|bash|shell|console)\n(.*?)^```", markdown, flags=re.M | re.S)
    lines = (line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines())
    return [line for line in lines if line]


def test_the_two_commands_are_first() -> None:
    assert shell_commands(README)[:2] == ["make run", "make test"]
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line and not line.startswith("#")]
    assert ci[-2:] == ["make lint", "make test"]  # CI runs exactly what a developer runs, lint first


def test_the_command_reader_sees_order_and_ignores_comments() -> None:
    markdown = "```\nmake diagram\n```\n```sh\n# first\nmake test  # runs it all\n```\n```sh\nmake run\n```\n"
    assert shell_commands(markdown) == ["make test", "make run"]


def test_a_prediction_and_its_answer_come_within_the_first_80_lines() -> None:
    lines = README.splitlines()
    first_curl = next(number for number, line in enumerate(lines, 1) if line.startswith("curl "))
    assert first_curl <= 80 and "/predict" in lines[first_curl - 1]
    answer = next(number for number, line in enumerate(lines, 1) if line.startswith('{"label": '))
    assert first_curl < answer <= 80


def test_the_readme_is_short() -> None:
    assert len(README.splitlines()) <= 260, "reference belongs in docs/: the README is a front door"


def test_the_readme_indexes_every_docs_page() -> None:
    pages = {path.relative_to(REPO).as_posix() for path in (REPO / "docs").glob("*.md")}
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)", README))
    assert pages <= linked, f"the README's index lacks {sorted(pages - linked)}"
