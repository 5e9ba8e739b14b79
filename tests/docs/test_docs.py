"""The docs stay true: links resolve, shell blocks parse, the generated tables are what their
generators print, and every route and every file a page names exists."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from gateway.app import create_app
from gateway.openapi import build
from gateway.routes import ROUTES
from gateway.settings import GatewaySettings
from tests.support.processes import REPO

PAGES = sorted([REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "MODEL_CARD.md",
                *(REPO / "docs").glob("*.md")])
FENCE = re.compile(r"^```.*?^```", flags=re.M | re.S)
#: Top-level folders whose files the pages name in backticks (`scripts/base-model.sh`).
CODE_ROOTS = ("bench", "deploy", "embedded", "gateway", "inference_worker", "ingest_service", "scripts",
              "shared", "tests", "tools", "trainer_service")


def prose(markdown: str) -> str:
    """`markdown` without its fenced code blocks."""
    return FENCE.sub("", markdown)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """The anchors of `markdown`'s headings."""
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", prose(markdown), flags=re.M)}


def broken_links(page: Path) -> list[str]:
    """The relative links of `page` whose file, or whose anchor in it, does not exist."""
    broken = []
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(text)):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        missing_anchor = (resolved.exists() and bool(anchor) and resolved.suffix == ".md"
                          and anchor not in anchors(resolved.read_text()))
        if not resolved.exists() or missing_anchor:
            broken.append(target)
    return broken


def test_the_link_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# The base model's recipe\n")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md#the-base-models-recipe) [web](https://x.org/y) [self](#top)\n# Top\n"
                    "[gone](c.md) [no anchor](b.md#nothing)\n```\n[in code](d.md)\n```\n")
    assert broken_links(page) == ["c.md", "b.md#nothing"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    assert not broken_links(page)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_shell_block_parses(page: Path) -> None:
    blocks = re.findall(r"^```(?:sh|bash|shell)\n(.*?)^```", page.read_text(), flags=re.M | re.S)
    for block in blocks:
        checked = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True, timeout=10)
        assert checked.returncode == 0, f"{checked.stderr}\n{block}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_file_and_make_target_a_page_names_exists(page: Path) -> None:
    text = page.read_text()
    named = set(re.findall(rf"`(?:\.venv/bin/python )?((?:{'|'.join(CODE_ROOTS)})/[\w./-]+\.\w+)", text))
    missing = sorted(name for name in named if not (REPO / name).exists())
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), flags=re.M))
    unknown = sorted(set(re.findall(r"(?:`|^)make ([a-z][\w-]*)", text, flags=re.M)) - targets)
    assert not missing and not unknown, (missing, unknown)


def script(name: str) -> ModuleType:
    """scripts/<name>.py, imported."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def settings_table() -> ModuleType:
    return script("settings_table")


def test_the_configuration_table_is_what_the_settings_classes_print() -> None:
    table = settings_table()
    assert table.block(table.DOC.read_text()) == table.table(), \
        "run .venv/bin/python scripts/settings_table.py --write"


def test_the_table_writer_replaces_only_its_block(tmp_path: Path) -> None:
    table = settings_table()
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{table.START}\n| old |\n{table.END}\nafter\n")
    table.write(doc)
    assert doc.read_text() == f"before\n{table.START}\n{table.table()}{table.END}\nafter\n"


def test_every_route_is_documented() -> None:
    app = create_app(GatewaySettings())
    routes = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    api = (REPO / "docs" / "api.md").read_text()
    documented = set(re.findall(r"`(?:GET|POST|DELETE|PUT) (/[^` ?]*)", api))
    assert routes - {"/"} <= documented | {"/"}, routes - documented


def test_the_routes_table_is_what_the_route_table_prints() -> None:
    table = script("route_table")
    assert table.block(table.DOC.read_text()) == table.table(), \
        "run .venv/bin/python scripts/route_table.py --write"


def test_a_stale_routes_table_is_told_apart_and_rewritten_alone(tmp_path: Path) -> None:
    table = script("route_table")
    doc = tmp_path / "api.md"
    current = table.table()
    stale = current.replace("| `POST /predict` |", "| `POST /classify` |")
    assert stale != current
    doc.write_text(f"before\n{table.START}\n{stale}{table.END}\nafter\n")
    assert table.block(doc.read_text()) != current
    table.write(doc)
    assert doc.read_text() == f"before\n{table.START}\n{current}{table.END}\nafter\n"
    with pytest.raises(ValueError, match="route-table"):
        table.block("a page without the markers")


def test_the_routes_table_names_only_statuses_the_openapi_document_declares() -> None:
    """A row's success and errors cells name statuses ("409 `job_over`"); each is one that
    /openapi.json declares for at least one of the row's routes, so the prose cannot promise what
    the document does not."""
    document = build(GatewaySettings(open_predict=False), ROUTES)
    for (row, _), routes in script("route_table").rows().items():
        declared = {status for route in routes
                    for status in document["paths"][route.path][route.method]["responses"]}
        named = set(re.findall(r"(?<![\w-])([2-5]\d\d)\b", f"{row.success} {row.errors}"))
        assert named <= declared, ([f"{r.method} {r.path}" for r in routes], named - declared)
