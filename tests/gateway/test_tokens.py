"""The token book and what a caller with a bad token meets: one name and one role per token,
refused at start with the line when a file says otherwise, a file of 20,000 tokens read and
searched fast, undecodable header bytes answered 401, and guessing slowed down and counted."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.tokens import Role, TokenBook, file_line
from tests.gateway.conftest import MakeClient
from tests.support.tokens import CONTRIBUTOR_TOKEN, OPERATOR, OPERATOR_TOKEN, bearer

pytestmark = pytest.mark.timeout(60)


def line(name: str, role: str, token: str) -> str:
    return file_line(name, role, token)  # type: ignore[arg-type]  # the roles are RoleName's values


def book(tmp_path: Path, text: str, **settings: object) -> TokenBook:
    tokens = tmp_path / "tokens.jsonl"
    tokens.write_bytes(text.encode())
    return TokenBook.from_settings(GatewaySettings(api_tokens_file=tokens, **settings))  # type: ignore[arg-type]


def test_a_line_cannot_rename_or_demote_a_token_from_the_environment(tmp_path: Path) -> None:
    # The file's second line names the operator's own token: before, the last match won and the
    # operator token became "mallory", a predict token.
    text = line("alice", "view", "alice-token-0123456789") + "\n" + line("mallory", "predict", OPERATOR_TOKEN)
    with pytest.raises(ValueError, match=r"tokens.jsonl:2: .*DERMASCAN_OPERATOR_TOKEN"):
        book(tmp_path, text, operator_token=OPERATOR_TOKEN)
    with pytest.raises(ValueError, match=r"tokens.jsonl:1: the name 'contributor' is taken"):
        book(tmp_path, line("contributor", "view", "another-token-0123456789") + "\n",
             contributor_token=CONTRIBUTOR_TOKEN)


def test_one_token_in_both_variables_stops_the_gateway() -> None:
    # Before, the contributor entry came last and won: the operator was demoted.
    with pytest.raises(ValueError, match="DERMASCAN_CONTRIBUTOR_TOKEN is the same token as "
                                         "DERMASCAN_OPERATOR_TOKEN"):
        create_app(GatewaySettings(operator_token=OPERATOR_TOKEN, contributor_token=OPERATOR_TOKEN))


def test_repeats_in_the_file_name_both_lines(tmp_path: Path) -> None:
    text = "# tokens\n" + line("alice", "operator", "alice-token-0123456789") + "\n\n" + \
        line("bob", "view", "alice-token-0123456789") + "\n"
    with pytest.raises(ValueError, match=r"tokens.jsonl:4: the token of 'bob' is already listed on line 2"):
        book(tmp_path, text)


def test_a_file_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    tokens = book(tmp_path, "\ufeff" + line("alice", "view", "alice-token-0123456789") + "\n")
    principal = tokens.identify("alice-token-0123456789")
    assert principal is not None and (principal.name, principal.role) == ("alice", Role.VIEW)


def test_twenty_thousand_tokens_load_and_are_found_fast(tmp_path: Path) -> None:
    count = 20_000
    lines = (json.dumps({"name": f"user{i}", "role": "contribute",
                         "sha256": hashlib.sha256(f"token-{i}".encode()).hexdigest()}) for i in range(count))
    tokens = tmp_path / "tokens.jsonl"
    tokens.write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    loaded = TokenBook.from_settings(GatewaySettings(api_tokens_file=tokens))
    load_s = time.perf_counter() - started
    assert len(loaded) == count
    assert load_s < 3.0, f"{load_s:.1f} s to read {count:,} tokens"  # 25 s when every line was compared
    started = time.perf_counter()
    for i in range(0, count, 20):
        found = loaded.identify(f"token-{i}")
        assert found is not None and found.name == f"user{i}"
    per_lookup_ms = (time.perf_counter() - started) * 1000 / (count // 20)
    assert per_lookup_ms < 0.1, f"{per_lookup_ms:.3f} ms a lookup"  # 0.88 ms with a scan of every entry


async def raw_get(port: int, path: str, authorization: bytes) -> bytes:
    """A GET whose Authorization header carries `authorization` as raw bytes; the status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + authorization
                 + b"\r\nConnection: close\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer.split(b"\r\n", 1)[0]


async def test_undecodable_bytes_in_the_authorization_header_are_a_401(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False)
    port = client.server.port
    assert port is not None
    for value in (b"Bearer \xff\xfe\xfd-not-utf-8-0123456789", b"Bearer caf\xc3\xa9-0123456789-token"):
        status = await raw_get(port, "/audit", value)
        assert status.startswith(b"HTTP/1.1 401"), (value, status)  # was a 500
    assert (await client.get("/audit", headers=OPERATOR)).status == 200


async def test_guessing_tokens_is_counted_and_slowed_to_a_few_a_minute(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False, auth_failures_per_min=5)
    for attempt in range(5):
        response = await client.get("/audit", headers=bearer(f"guess-{attempt}-0123456789abcdef"))
        assert response.status == 401
    # the address is over its failures: refused, whatever it sends, until the minute is over
    for headers in (bearer("guess-5-0123456789abcdef"), OPERATOR):
        response = await client.get("/audit", headers=headers)
        assert response.status == 429 and (await response.json())["error"]["code"] == "too_many_auth_failures"
        assert 1 <= int(response.headers["Retry-After"]) <= 60
    metrics = await (await client.get("/metrics")).text()
    assert 'dermascan_gateway_auth_failures_total{reason="unknown_token"} 5.0' in metrics
    assert 'dermascan_gateway_auth_failures_total{reason="address_limited"} 2.0' in metrics
