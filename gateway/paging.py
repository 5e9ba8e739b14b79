"""Pages of the lists that grow with history (`GET /models`, `GET /audit`): `?limit=` items
(1 to `DERMASCAN_MAX_PAGE_SIZE`, `DERMASCAN_PAGE_SIZE` when absent) from the newest end, and
`?after=` the `next` of the page before (an opaque cursor; `next` is null on the last page). A
page costs store reads in proportion to its `limit`, never to the length of the history."""

from __future__ import annotations

import re
from typing import Any

from gateway.settings import GatewaySettings
from shared.errors import BadRequest

_POSITION = re.compile(r"-?[0-9]{1,10}")
#: The OpenAPI schema of a cursor that is a registry position (`GET /models`).
POSITION_SCHEMA: dict[str, Any] = {"type": "string", "pattern": f"^{_POSITION.pattern}$",
                                   "description": "The `next` of the page before (absent: the newest page)."}


def parse_limit(raw: str | None, settings: GatewaySettings) -> int:
    """The `limit` query parameter: 1 to `max_page_size`, `page_size` when absent; raises
    BadRequest otherwise."""
    if raw is None:
        return settings.page_size
    top = settings.max_page_size
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 7) or not 1 <= int(raw) <= top:
        raise BadRequest(f"limit must be a whole number from 1 to {top} (got {raw[:40]!r})",
                         code="invalid_limit")
    return int(raw)


def parse_position(raw: str | None, name: str = "after") -> int | None:
    """A cursor that is a position in a registry log (`shared.registry`): None when absent;
    raises BadRequest when it is not one."""
    if raw is None:
        return None
    if not _POSITION.fullmatch(raw):
        raise BadRequest(f"{name} must be the `next` of an earlier page (got {raw[:40]!r})",
                         code="invalid_cursor")
    return int(raw)


def cursor(position: int | None) -> str | None:
    """The `next` of a page that ends before `position`."""
    return None if position is None else str(position)


def limit_schema(settings: GatewaySettings) -> dict[str, Any]:
    """The OpenAPI schema of `limit` for a gateway with `settings`."""
    return {"type": "integer", "minimum": 1, "maximum": settings.max_page_size, "default": settings.page_size}

