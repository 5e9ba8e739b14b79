"""The web UI's files: the page, its scripts, styles and icon (`gateway/static/`, nothing fetched
from elsewhere), and the model card it links to.

Only the files of `ASSETS` are served, by name: no path from a request ever reaches the file
system.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from shared.errors import NotFound
from shared.settings import REPO_ROOT

STATIC = Path(__file__).parent / "static"
MODEL_CARD = REPO_ROOT / "MODEL_CARD.md"
#: name -> media type of every file under /static/.
ASSETS = {
    "app.css": "text/css",
    "app.js": "text/javascript",
    "charts.js": "text/javascript",
    "dom.js": "text/javascript",
    "training.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}
_NO_STORE = {"Cache-Control": "no-cache"}


async def index(_: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=_NO_STORE)


async def asset(request: web.Request) -> web.Response:
    """One file of the UI; 404 for any other name."""
    name = request.match_info["name"]
    if name not in ASSETS:
        raise NotFound(f"no UI file {name[:80]!r}", code="no_such_file")
    body = await asyncio.to_thread((STATIC / name).read_bytes)  # off the loop, as every file read
    return web.Response(body=body, content_type=ASSETS[name],
                        charset="utf-8" if ASSETS[name].startswith("text/") else None, headers=_NO_STORE)


async def model_card(_: web.Request) -> web.Response:
    """MODEL_CARD.md as plain text (the repository's copy); 404 where it was not installed."""
    try:
        text = await asyncio.to_thread(MODEL_CARD.read_text, encoding="utf-8")
    except FileNotFoundError:
        raise NotFound("the model card is not installed here; it is MODEL_CARD.md in the repository",
                       code="no_model_card") from None
    return web.Response(text=text, content_type="text/plain", charset="utf-8")
