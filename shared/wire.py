"""How a message travels: the fields every message carries (`Message`), its one codec, and the
rules that let old and new services talk during a rolling deploy.

Two shapes on the wire:
- JSON body (`encode`/`decode`): every reply, and every message without a payload.
- Payload body (`to_wire`/`from_wire`): a message that names a `PAYLOAD` field (an image) travels
  as that field's raw bytes in the body and its other fields as AMQP headers, one per field: no
  base64 (a third more bytes through the broker) and no JSON pass over megabytes. Headers hold
  str, int, bool and None as they are; a float travels as its `repr` (an AMQP table keeps a float
  in 32 bits: a Unix time would lose minutes), read back exactly.

Compatibility:
- What arrives from the wire may carry fields (and headers) this code does not know: they are
  ignored (`extra="ignore"` at decoding), so a producer may add an optional field without a
  bump. What code builds, and what the API accepts from users, stays strict: the models' own
  `extra="forbid"`.
- `schema_version` is a message type's major version, the default of its field: raised only for
  a change an older reader cannot follow (a field removed, renamed, retyped, or a meaning
  changed). A message of a newer major version is refused before any other field is read: a
  pydantic `ValidationError` of type `newer_schema` (so the consumers' existing handling applies:
  an error reply, or the dead-letter queue), turned into the error to answer with by `refusal`.
- A payload message that arrives without a `schema_version` header was written before payloads
  travelled raw (a base64 JSON body) and is read as JSON: upgrade workers before gateways.

Pure functions, thread-safe.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from shared.errors import BadRequest, DermaScanError, ServiceUnavailable

M = TypeVar("M", bound="Message")
#: What one AMQP header of a payload message holds (both buses carry these unchanged).
Header = str | int | bool | None
#: The `ValidationError` type of a message whose major version is newer than its reader's.
NEWER_SCHEMA = "newer_schema"


def new_id() -> str:
    """A fresh random id (32 hex digits, 128 bits from the OS's random source: as unguessable as a
    UUID4's 122, at a third of `uuid.uuid4().hex`'s cost; a worker makes one per reply)."""
    return os.urandom(16).hex()


class Message(BaseModel):
    """Fields every message carries. A subclass raises its major version by redeclaring
    `schema_version` with the new default."""

    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    #: The bytes field that travels as the body (None: the message travels as a JSON body).
    PAYLOAD: ClassVar[str | None] = None

    schema_version: int = Field(1, ge=1, description="Major version of this message's schema: raised only "
                                                     "for a change an older reader cannot follow.")
    message_id: str = Field(default_factory=new_id, description="Unique id of this message.")

    @model_validator(mode="before")
    @classmethod
    def _not_newer(cls, data: Any) -> Any:
        """Refuse a newer major version before reading the rest: its fields may mean other things."""
        if isinstance(data, dict):
            version, readable = data.get("schema_version"), cls.model_fields["schema_version"].default
            if isinstance(version, int | str) and str(version).isdigit() and int(version) > readable:
                raise PydanticCustomError(
                    NEWER_SCHEMA, "{kind} of schema version {version}: this service reads up to version "
                                  "{readable} (a newer producer; upgrade this service)",
                    {"kind": cls.__name__, "version": int(version), "readable": readable})
        return data


@dataclass(frozen=True)
class Envelope:
    """A message as the bus carries it: the body and the headers to publish it with."""

    body: bytes
    headers: dict[str, Header] = field(default_factory=dict)


def encode(message: Message) -> bytes:
    """The message as a JSON body (bytes fields in base64)."""
    return message.model_dump_json().encode()


def decode(kind: type[M], body: bytes) -> M:
    """A JSON body as `kind`, ignoring fields it does not know; raises pydantic.ValidationError
    on a bad shape or a newer major version (`NEWER_SCHEMA`)."""
    return kind.model_validate_json(body, extra="ignore")


def to_wire(message: Message) -> Envelope:
    """The body and headers that carry `message`: its payload raw and its other fields as
    headers, or (no `PAYLOAD`) a JSON body. Raises TypeError for a payload message with a field
    a header cannot hold (a list, a dict)."""
    payload = message.PAYLOAD
    if payload is None:
        return Envelope(encode(message))
    fields = message.model_dump(mode="json", exclude={payload})
    return Envelope(getattr(message, payload), {name: _header(message, name, value)
                                                  for name, value in fields.items()})


def _header(message: Message, name: str, value: object) -> Header:
    if isinstance(value, float):
        return repr(value)  # exact, where an AMQP float would keep 32 bits
    if value is None or isinstance(value, str | int):
        return value
    raise TypeError(f"{type(message).__name__}.{name} is a {type(value).__name__}: the fields beside a "
                    "payload travel as AMQP headers and must be str, int, float, bool or None")


def from_wire(kind: type[M], body: bytes, headers: Mapping[str, object]) -> M:
    """The message `to_wire` made from `body` and `headers` (or a JSON body: a message without
    payload, or a payload message written before payloads travelled raw), ignoring fields and
    headers it does not know; raises pydantic.ValidationError as `decode` does."""
    if kind.PAYLOAD is None or "schema_version" not in headers:
        return decode(kind, body)
    return kind.model_validate({**headers, kind.PAYLOAD: body}, extra="ignore")


class NewerSchema(ServiceUnavailable):
    """A message of a newer major version than this service reads: a rolling deploy under way
    (a peer already upgraded may read it, so it is retryable)."""

    default_code = "unsupported_schema_version"


def refusal(exc: ValidationError, what: str, *,
            malformed: type[DermaScanError] = BadRequest) -> DermaScanError:
    """The error to answer with for a message that could not be read: `NewerSchema` for a newer
    major version, otherwise `malformed` (code `bad_message`) naming the first problems."""
    problems = exc.errors(include_url=False, include_input=False)
    newer = next((p for p in problems if p["type"] == NEWER_SCHEMA), None)
    if newer is not None:
        return NewerSchema(f"{what}: {newer['msg']}")
    listed = "; ".join(f"{'.'.join(map(str, p['loc'])) or 'body'}: {p['msg']}" for p in problems[:3])
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return malformed(f"{what} could not be read: {listed}{more}", code="bad_message")
