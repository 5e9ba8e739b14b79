"""The routes table of docs/api.md, made from the gateway's route table (gateway/routes.py, the one
declaration of every route): printed, or written between the page's route-table markers.

    .venv/bin/python scripts/route_table.py                 # print it
    .venv/bin/python scripts/route_table.py --write         # rewrite docs/api.md's block

One row per route, in the table's order; routes that declare the same `Row` and role share one.
`tests/docs/` checks that the page's block is exactly what this prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.routes import ROUTES, Route, Row
from gateway.tokens import Role
from shared.settings import REPO_ROOT

DOC = REPO_ROOT / "docs" / "api.md"
START, END = "<!-- route-table:start -->", "<!-- route-table:end -->"


def role_cell(route: Route) -> str:
    """Who may call `route`: its role, or `none` and why."""
    if route.role is Role.PREDICT:
        return "none (`predict` when `DERMASCAN_OPEN_PREDICT=false`)"
    if route.role is not None:
        return f"`{route.role.label}`"
    return f"none ({route.doc.open_because})" if route.doc.open_because else "none"


def success_cell(route: Route) -> str:
    """What a success is: the row's words, or the route's 2xx statuses."""
    return route.doc.success or ", ".join(str(status) for status in route.ok if status < 300)


def rows() -> dict[tuple[Row, str], list[Route]]:
    """(row, role cell) -> the routes that share that row, in the table's order."""
    grouped: dict[tuple[Row, str], list[Route]] = {}
    for route in ROUTES:
        grouped.setdefault((route.doc, role_cell(route)), []).append(route)
    return grouped


def table() -> str:
    """The markdown table, ending with a newline."""
    lines = ["| method and path | role | what it does | success | errors |", "|---|---|---|---|---|"]
    for (row, role), routes in rows().items():
        paths = ", ".join(f"`{route.method.upper()} {route.path}`" for route in routes)
        cells = (paths, role, row.what, success_cell(routes[0]), row.errors)
        lines.append("|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|")
    return "\n".join(lines) + "\n"


def block(text: str) -> str:
    """What lies between the route-table markers of `text`; ValueError when they are missing."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no {START} ... {END} block")
    return text[start + len(START):end].lstrip("\n")


def write(doc: Path) -> None:
    """Replace the table between `doc`'s route-table markers with `table()`."""
    text = doc.read_text()
    block(text)  # refuses a page without the markers
    start, end = text.find(START) + len(START), text.find(END)
    doc.write_text(f"{text[:start]}\n{table()}{text[end:]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The routes table of docs/api.md.")
    parser.add_argument("--write", nargs="?", const=DOC, type=Path, metavar="DOC",
                        help="rewrite the table in DOC (default docs/api.md) instead of printing it")
    args = parser.parse_args(argv)
    if args.write:
        write(args.write)
    else:
        print(table(), end="")


if __name__ == "__main__":
    main()
