"""The API tokens every test system is given, and the headers that send them."""

from __future__ import annotations

OPERATOR_TOKEN = "test-operator-token-0123456789"
CONTRIBUTOR_TOKEN = "test-contributor-token-0123456789"
#: What a process-level test system adds to its environment.
TOKEN_ENV = {"DERMASCAN_OPERATOR_TOKEN": OPERATOR_TOKEN, "DERMASCAN_CONTRIBUTOR_TOKEN": CONTRIBUTOR_TOKEN}


def bearer(token: str) -> dict[str, str]:
    """The `Authorization` header that sends `token`."""
    return {"Authorization": f"Bearer {token}"}


OPERATOR = bearer(OPERATOR_TOKEN)
CONTRIBUTOR = bearer(CONTRIBUTOR_TOKEN)
