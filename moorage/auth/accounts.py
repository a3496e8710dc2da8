"""Account operations shared by the server, the CLI, the admin API and the web UI: the first-start
administrator, and access tokens (whose secret is made before anything is stored: the store keeps
only its hash)."""

from __future__ import annotations

import logging

from ..accounts import passwords
from ..config import Settings
from ..metadata.auth_store import AuthStore
from ..metadata.records import TokenRecord

log = logging.getLogger("moorage.auth")


async def create_access_token(
    store: AuthStore, user: str, name: str, scope: list[str] | None, expires_at: float | None
) -> tuple[TokenRecord, str]:
    """A new personal access token for ``user``: the record and the token text (shown once)."""
    token_id, text, secret_hash = passwords.new_token()
    rec = await store.create_token(user, name, scope, expires_at, token_id=token_id, secret_hash=secret_hash)
    return rec, text


async def bootstrap_admin(settings: Settings, store: AuthStore) -> None:
    """On first start (no administrator yet) create the admin: password from
    ``auth.admin_password`` or generated and printed once.  (Deleting every admin and
    restarting is thus also the way back in.)"""
    if await store.count_users(admins_only=True) > 0:
        return
    password = settings.auth.admin_password
    generated = password is None
    if generated:
        password = passwords.generate_password()
    assert password is not None
    hashed = await passwords.hash_password_async(password, settings.auth.bcrypt_rounds)
    if not await store.create_user(settings.auth.admin_user, hashed, admin=True, if_no_admin=True):
        if await store.count_users(admins_only=True) == 0:
            log.warning(
                "no administrator, and the name %r is taken by a non-admin user: make one with `moorage user add NAME --admin`",
                settings.auth.admin_user,
            )
    elif generated:
        # Printed once, on purpose: the only way to learn it.  Change it with `moorage user passwd`.
        log.warning("created admin user %r with generated password: %s", settings.auth.admin_user, password)
    else:
        log.info("created admin user %r (password from auth.admin_password)", settings.auth.admin_user)
