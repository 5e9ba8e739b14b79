"""The web UI's page as the gateway serves it (its behaviour in a browser: tests/test_end_to_end.py)."""

from __future__ import annotations

import re

import pytest

from tests.gateway.conftest import MakeClient

pytestmark = pytest.mark.timeout(30)


async def test_the_page_inserts_server_text_as_text_and_sends_a_tab_scoped_token(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False)
    response = await client.get("/")
    assert response.status == 200
    page = await response.text()
    assert not re.findall(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", page)
    assert 'id="token-dialog"' in page and "Authorization: `Bearer ${token}`" in page
    assert "sessionStorage" in page and "localStorage" not in page
