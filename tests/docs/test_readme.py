"""The README stays true: the two commands, every setting, every route."""

from __future__ import annotations

import importlib.util
import re

from gateway.app import create_app
from gateway.settings import GatewaySettings
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


def test_every_setting_is_in_the_configuration_table() -> None:
    spec = importlib.util.spec_from_file_location("settings_table", REPO / "scripts" / "settings_table.py")
    assert spec is not None and spec.loader is not None
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    missing = [name for name in table.variables() if f"`{name}`" not in README]
    assert not missing, f"README lacks {missing}: run scripts/settings_table.py"


def test_every_route_is_documented() -> None:
    app = create_app(GatewaySettings())
    routes = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    documented = set(re.findall(r"`(?:GET|POST) (/[^` ?]*)", README))
    assert routes - {"/"} <= documented | {"/"}, routes - documented
