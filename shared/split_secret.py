"""The server's split secret: the key `shared.catalog.split_for` and `validation_share` draw with.

Every service that assigns splits (the ingest service, the trainer's `import` and its retrain)
must use the same secret, in one process (`make run`) as in many on one bucket. It is the
configured `DERMASCAN_SPLIT_SECRET` when set; else a random one kept at `SECRET_KEY` in the object
store, created by the first service that needs it with a conditional create (one of concurrent
starters wins; the others read the winner's) and read by everyone after. The key lies outside
every prefix the gateway serves or lists (`catalog/`, `images/`, `thumbnails/`, `jobs/`,
`models/`, `audit/`), so no client can learn it, and without it no client can compute, choose or
search for the split an image will get.
"""

from __future__ import annotations

import datetime as dt
import secrets

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from shared.errors import NotFound
from shared.manifest import utcnow
from shared.store import AlreadyExists, ObjectStore

SECRET_KEY = "secrets/split.json"
SECRET_BYTES = 32


class StoredSecret(BaseModel):
    """The object at `SECRET_KEY`."""

    model_config = ConfigDict(extra="forbid")

    secret: str = Field(pattern=r"^[0-9a-f]{64}$", description="32 random bytes, hex.")
    created_at: dt.datetime = Field(default_factory=utcnow, description="When the first starter made it.")


async def load_split_secret(store: ObjectStore, configured: SecretStr | None) -> bytes:
    """The split secret: `configured` (a settings' `split_secret`) when set, else the store's,
    created now if it has none. Concurrent callers on one store, in one process or many, all
    get the same bytes. Raises as the store does (StoreUnavailable); a secret object that does
    not parse raises pydantic's ValidationError rather than drawing with another secret."""
    if configured is not None:
        return configured.get_secret_value().encode()
    try:
        return _parse(await store.get(SECRET_KEY))
    except NotFound:
        pass
    mine = StoredSecret(secret=secrets.token_hex(SECRET_BYTES))
    try:
        await store.create(SECRET_KEY, mine.model_dump_json().encode(), content_type="application/json")
    except AlreadyExists:  # another starter won: everyone draws with theirs
        return _parse(await store.get(SECRET_KEY))
    return bytes.fromhex(mine.secret)


def _parse(body: bytes) -> bytes:
    return bytes.fromhex(StoredSecret.model_validate_json(body).secret)
