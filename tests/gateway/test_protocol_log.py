"""A request aiohttp cannot parse is the client's doing: answered 400 and logged as one warning
line, never as an ERROR with a traceback (a client sending many would fill the log)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.gateway.conftest import MakeClient

pytestmark = pytest.mark.timeout(30)


async def test_an_oversized_header_line_is_a_400_and_one_warning_line(
        make_client: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    client = await make_client(with_worker=False)
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 20_000 + b"\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer[:80]
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert [r.levelname for r in records] == ["WARNING"], [(r.levelname, r.msg) for r in records]
    (record,) = records
    assert record.exc_info is None and "\n" not in record.getMessage()
    assert "LineTooLong" in record.getMessage() and "127.0.0.1" in record.getMessage()
    assert (await client.get("/livez")).status == 200
