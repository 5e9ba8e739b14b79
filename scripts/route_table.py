"""The routes table of docs/api.md, made from the gateway's route table (gateway/routes.py, the one
declaration of every route): printed, or written between the page's route-table markers.

    .venv/bin/python scripts/route_table.py                 # print it
    .venv/bin/python scripts/route_table.py --write         # rewrite docs/api.md's block

One row per route, in the table's order; routes that declare the same `Row` and role share one.
`tests/docs/` checks that the page's block is exactly what this prints.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.routes import ROUTES, Route, Row
from gateway.tokens import Role
from scripts.generated_block import GeneratedBlock
from shared.settings import REPO_ROOT

DOC = REPO_ROOT / "docs" / "api.md"


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


GENERATED = GeneratedBlock("route-table", DOC, table, "The routes table of docs/api.md.")
block, write, main = GENERATED.block, GENERATED.write, GENERATED.main
START, END = GENERATED.start, GENERATED.end


if __name__ == "__main__":
    main()
