"""The web UI's files as the gateway serves them (their behaviour in a browser: tests/test_ui_browser.py
and tests/test_end_to_end.py)."""

from __future__ import annotations

import re

import pytest

from gateway.ui import ASSETS, STATIC
from tests.gateway.conftest import MakeClient

pytestmark = pytest.mark.timeout(30)


async def test_the_page_inserts_server_text_as_text_and_sends_a_tab_scoped_token(
        make_client: MakeClient) -> None:
    client = await make_client(with_worker=False)
    response = await client.get("/")
    assert response.status == 200
    page = await response.text()
    scripts = {name: await (await client.get(f"/static/{name}")).text()
               for name in ASSETS if name.endswith(".js")}
    for source in (page, *scripts.values()):
        assert not re.findall(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|DOMParser", source)
        assert "localStorage" not in source
    assert 'id="token-dialog"' in page
    assert "Authorization: `Bearer ${token}`" in scripts["dom.js"] and "sessionStorage" in scripts["dom.js"]
    assert 'xhr.setRequestHeader("Authorization", `Bearer ${token}`)' in scripts["app.js"]


async def test_nothing_is_fetched_from_elsewhere_and_every_file_the_page_names_is_served(
        make_client: MakeClient) -> None:
    client = await make_client(with_worker=False)
    page = await (await client.get("/")).text()
    named = re.findall(r'(?:src|href)="(/[^"#]*)"', page)
    assert "/static/app.js" in named and "/static/favicon.svg" in named  # no /favicon.ico 404
    for path in named:
        response = await client.get(path)
        assert response.status == 200, path
    sources = [page] + [(STATIC / name).read_text() for name in ASSETS if not name.endswith(".svg")]
    for source in sources:
        assert not re.findall(r"https?://(?!www\.w3\.org/2000/svg)", source)  # no CDN, no remote font
    imports = {m for name in ASSETS if name.endswith(".js") for m in re.findall(r'from "\./([^"]+)"',
                                                                                 (STATIC / name).read_text())}
    assert imports <= set(ASSETS)


async def test_only_the_ui_files_are_served_and_the_model_card_is_linked(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False)
    for name in ("index.html", "..%2Fapp.py", "nope.js"):
        response = await client.get(f"/static/{name}")
        assert response.status == 404 and (await response.json())["error"]["code"] == "no_such_file"
    style = await client.get("/static/app.css")
    assert style.content_type == "text/css"
    card = await client.get("/model-card")
    assert card.status == 200 and card.content_type == "text/plain" and "# " in await card.text()
    assert 'href="/model-card"' in await (await client.get("/")).text()
