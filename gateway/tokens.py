"""API tokens: roles, the token file's format, and the book the gateway looks callers up in.

Roles are ordered: `operator` implies `contribute` implies `predict`. A token is known either
directly from the settings (`DERMASCAN_OPERATOR_TOKEN`, `DERMASCAN_CONTRIBUTOR_TOKEN`) or as a
line of the token file (`DERMASCAN_API_TOKENS_FILE`), JSON Lines with `#` comments and blank
lines allowed:

    {"name": "alice", "role": "operator", "sha256": "<hex SHA-256 of the token>"}

The file holds digests only, so reading it does not reveal a token. `python -m gateway token
--name alice --role operator` makes a token, prints it on stderr and the file line on stdout.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.settings import GatewaySettings

RoleName = Literal["predict", "contribute", "operator"]


class Role(enum.IntEnum):
    """What a token may do; a higher role may do everything a lower one may."""

    PREDICT = 1
    CONTRIBUTE = 2
    OPERATOR = 3

    @property
    def label(self) -> RoleName:
        return self.name.lower()  # type: ignore[return-value]  # the lower-cased names are RoleName's values

    @classmethod
    def named(cls, name: str) -> Role:
        return cls[name.upper()]


@dataclass(frozen=True)
class Principal:
    """Who sent a request: the token's name and its role."""

    name: str
    role: Role


class TokenLine(BaseModel):
    """One line of the token file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[\w.@-]+$",
                      description="Who holds the token; shown in the audit log.")
    role: RoleName = Field(description="predict, contribute or operator.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the token's UTF-8 bytes.")


def digest(token: str) -> bytes:
    """The SHA-256 of a token (what the file stores, in hex)."""
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe, prefixed so secret scanners can spot it)."""
    return "dsk_" + secrets.token_urlsafe(32)


def file_line(name: str, role: RoleName, token: str) -> str:
    """The token file's line for `token`; raises pydantic.ValidationError on a bad name."""
    line = TokenLine(name=name, role=role, sha256=digest(token).hex())
    return json.dumps(line.model_dump())


def read_token_file(path: Path) -> list[TokenLine]:
    """Every token of the file; raises ValueError naming the line on a malformed one, a
    repeated name or a repeated digest."""
    lines: list[TokenLine] = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            line = TokenLine.model_validate_json(text)
        except ValidationError as exc:
            raise ValueError(f"{path}:{number}: not a token line: "
                             f"{exc.errors(include_url=False, include_input=False)}") from None
        if any(line.name == seen.name or line.sha256 == seen.sha256 for seen in lines):
            raise ValueError(f"{path}:{number}: the name or the token of {line.name!r} is already listed")
        lines.append(line)
    return lines


class TokenBook:
    """The tokens one gateway accepts, kept as digests. Immutable; safe anywhere."""

    def __init__(self, entries: list[tuple[bytes, Principal]]) -> None:
        self._entries = list(entries)

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> TokenBook:
        """The direct tokens of `settings` and the lines of its token file; raises ValueError
        when the file is malformed or a name appears twice, OSError when it cannot be read."""
        entries: list[tuple[bytes, Principal]] = []
        for secret, principal in ((settings.operator_token, Principal("operator", Role.OPERATOR)),
                                  (settings.contributor_token, Principal("contributor", Role.CONTRIBUTE))):
            if secret is not None:
                entries.append((digest(secret.get_secret_value()), principal))
        if settings.api_tokens_file is not None:
            for line in read_token_file(settings.api_tokens_file):
                if any(line.name == p.name for _, p in entries):
                    raise ValueError(f"{settings.api_tokens_file}: the name {line.name!r} is taken "
                                     "by a token from the environment")
                entries.append((bytes.fromhex(line.sha256), Principal(line.name, Role.named(line.role))))
        return cls(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def identify(self, token: str) -> Principal | None:
        """Whose token this is, or None. Compares digests with `hmac.compare_digest` against
        every entry, so the time taken does not depend on which entry (if any) matched."""
        presented = digest(token)
        found: Principal | None = None
        for known, principal in self._entries:
            if hmac.compare_digest(presented, known):
                found = principal
        return found
