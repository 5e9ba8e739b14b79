"""API tokens: roles, the token file's format, and the book the gateway looks callers up in.

Roles are ordered: `operator` implies `contribute` implies `view` implies `predict`. `view` may
see the catalog's images (thumbnails and the samples that list them). A token is known either
directly from the settings (`DERMASCAN_OPERATOR_TOKEN`, `DERMASCAN_CONTRIBUTOR_TOKEN`) or as a
line of the token file (`DERMASCAN_API_TOKENS_FILE`), JSON Lines in UTF-8 (a byte-order mark is
allowed) with `#` comments and blank lines allowed:

    {"name": "alice", "role": "operator", "sha256": "<hex SHA-256 of the token>"}

The file holds digests only, so reading it does not reveal a token. `python -m gateway token
--name alice --role operator` makes a token, prints it on stderr and the file line on stdout.
Every token has one name and one role: a line that repeats a name or a token (of the file or
of the environment), or the same token in both variables, stops the gateway at start, naming
the line.
"""

from __future__ import annotations

import enum
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.settings import GatewaySettings

RoleName = Literal["predict", "view", "contribute", "operator"]


class Role(enum.IntEnum):
    """What a token may do; a higher role may do everything a lower one may."""

    PREDICT = 1
    VIEW = 2
    CONTRIBUTE = 3
    OPERATOR = 4

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
    role: RoleName = Field(description="predict, view, contribute or operator.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the token's UTF-8 bytes.")


def digest(token: str) -> bytes:
    """The SHA-256 of a token's UTF-8 bytes (what the file stores, in hex). Never raises: text
    that is not valid Unicode (a header's undecodable bytes) is hashed as its raw bytes."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe, prefixed so secret scanners can spot it)."""
    return "dsk_" + secrets.token_urlsafe(32)


def file_line(name: str, role: RoleName, token: str) -> str:
    """The token file's line for `token`; raises pydantic.ValidationError on a bad name."""
    line = TokenLine(name=name, role=role, sha256=digest(token).hex())
    return json.dumps(line.model_dump())


def read_token_file(path: Path) -> list[tuple[int, TokenLine]]:
    """Every token of the file with its line number; raises ValueError naming the line on a
    malformed one, a repeated name or a repeated digest. Linear in the file's length."""
    lines: list[tuple[int, TokenLine]] = []
    names: dict[str, int] = {}
    digests: dict[str, int] = {}
    for number, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            line = TokenLine.model_validate_json(text)
        except ValidationError as exc:
            raise ValueError(f"{path}:{number}: not a token line: "
                             f"{exc.errors(include_url=False, include_input=False)}") from None
        if line.name in names:
            raise ValueError(f"{path}:{number}: the name {line.name!r} is already listed on line "
                             f"{names[line.name]}")
        if line.sha256 in digests:
            raise ValueError(f"{path}:{number}: the token of {line.name!r} is already listed on line "
                             f"{digests[line.sha256]}: one token, one name and one role")
        names[line.name], digests[line.sha256] = number, number
        lines.append((number, line))
    return lines


class TokenBook:
    """The tokens one gateway accepts, kept as digests in a dict. Immutable; safe anywhere."""

    def __init__(self, entries: dict[bytes, Principal]) -> None:
        self._by_digest = dict(entries)

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> TokenBook:
        """The direct tokens of `settings` and the lines of its token file; raises ValueError
        when the file is malformed or two entries share a name or a token (naming the line),
        OSError when it cannot be read."""
        entries: dict[bytes, Principal] = {}
        where: dict[bytes, str] = {}
        for variable, secret, principal in (
                ("DERMASCAN_OPERATOR_TOKEN", settings.operator_token, Principal("operator", Role.OPERATOR)),
                ("DERMASCAN_CONTRIBUTOR_TOKEN", settings.contributor_token,
                 Principal("contributor", Role.CONTRIBUTE))):
            if secret is None:
                continue
            known = digest(secret.get_secret_value())
            if known in entries:
                raise ValueError(f"{variable} is the same token as {where[known]}: give each role its own")
            entries[known], where[known] = principal, variable
        if settings.api_tokens_file is not None:
            path = settings.api_tokens_file
            env_names = {p.name: where[d] for d, p in entries.items()}
            for number, line in read_token_file(path):
                known = bytes.fromhex(line.sha256)
                if known in entries:
                    raise ValueError(f"{path}:{number}: the token of {line.name!r} is {where[known]}; a line "
                                     "may not give it another name or role")
                if line.name in env_names:
                    raise ValueError(f"{path}:{number}: the name {line.name!r} is taken by "
                                     f"{env_names[line.name]}")
                entries[known] = Principal(line.name, Role.named(line.role))
        return cls(entries)

    def __len__(self) -> int:
        return len(self._by_digest)

    def identify(self, token: str) -> Principal | None:
        """Whose token this is, or None. One dict lookup of the token's SHA-256: what a lookup's
        timing could tell is about the digest, which a guesser cannot steer (it is a hash of a
        secret), so it needs no constant-time scan of every entry."""
        return self._by_digest.get(digest(token))
