"""Account operations shared by the CLI, the admin API and the web UI, where a secret is made
before anything is stored (the store keeps only its hash)."""

from __future__ import annotations

from ..metadata.auth_store import AuthStore
from ..metadata.records import TokenRecord
from . import passwords


async def create_access_token(store: AuthStore, user: str, name: str, scope: list[str] | None,
                              expires_at: float | None) -> tuple[TokenRecord, str]:
    """A new personal access token for ``user``: the record and the token text (shown once)."""
    token_id, text, secret_hash = passwords.new_token()
    rec = await store.create_token(user, name, scope, expires_at, token_id=token_id, secret_hash=secret_hash)
    return rec, text
