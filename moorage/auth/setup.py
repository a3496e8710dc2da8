"""Wires authentication into the app: the auth middleware, ``/auth/token`` and ``/api/v1/``.

``auth.mode``:

* ``none`` -- anyone may do anything (the default); only a route missing from the routes
  table is refused.
* ``htpasswd`` -- HTTP basic against a bcrypt htpasswd file, like ``registry:2``: every
  authenticated user may do everything; no credentials -> ``401`` + ``WWW-Authenticate: Basic``.
* ``token`` -- the Docker Registry token flow: the registry accepts only signed JWTs from
  ``/auth/token`` and checks that their ``access`` claim covers the request; users, grants,
  access tokens and public repositories live in the metadata database.

The middleware runs after routing, so it looks the matched route's rule up in
:data:`moorage.api.routes.RULES` instead of parsing URLs.  The handlers live in
:mod:`moorage.api.token` and :mod:`moorage.api.admin_users`; the logic in
:class:`~moorage.auth.authenticator.Authenticator`.
"""

from __future__ import annotations

import logging
from typing import AsyncIterator

from aiohttp import web

from ..api.common import AUTHENTICATOR, DATABASE
from ..config import Settings
from ..metadata.auth_store import AuthStore
from . import passwords
from .authenticator import Authenticator
from .passwords import Htpasswd
from .state import htpasswd_middleware, listed_routes_middleware, token_middleware
from .tokens import TokenSigner

log = logging.getLogger("moorage.auth")


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
            log.warning("no administrator, and the name %r is taken by a non-admin user: "
                        "make one with `moorage user add NAME --admin`", settings.auth.admin_user)
    elif generated:
        # Printed once, on purpose: the only way to learn it.  Change it with `moorage user passwd`.
        log.warning("created admin user %r with generated password: %s", settings.auth.admin_user, password)
    else:
        log.info("created admin user %r (password from auth.admin_password)", settings.auth.admin_user)


def setup_auth(app: web.Application, settings: Settings) -> None:
    mode = settings.auth.mode
    if mode == "none":
        app.middlewares.append(listed_routes_middleware())
        return
    store = AuthStore(app[DATABASE])
    auth = Authenticator(settings, store)
    app[AUTHENTICATOR] = auth
    if mode == "htpasswd":
        path = settings.auth.htpasswd.path
        if path is None:
            raise ValueError("auth.mode is htpasswd but auth.htpasswd.path is not set")
        auth.htpasswd = Htpasswd(path)
        app.middlewares.append(htpasswd_middleware(auth))
        return

    key_path = settings.auth.token.key_path or (settings.data / "auth" / "token-signing-key.pem")
    signer = auth.signer = TokenSigner(store, issuer=settings.auth.token.issuer, service=settings.auth.service,
                                       key_path=key_path, expiry=settings.auth.token.expiry,
                                       refresh_expiry=settings.auth.token.refresh_expiry)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await bootstrap_admin(settings, store)
        await signer.load()
        yield

    app.cleanup_ctx.append(lifecycle)
    app.middlewares.append(token_middleware(auth))
    from ..api import admin_users, token

    app.router.add_routes(token.routes)
    app.router.add_routes(admin_users.routes)
