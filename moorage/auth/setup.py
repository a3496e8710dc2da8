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
rule it was declared with (:mod:`moorage.api.routing`) instead of parsing URLs.  The handlers live in
:mod:`moorage.auth.token_server` and :mod:`moorage.auth.admin_users`; the logic in
:class:`~moorage.auth.authenticator.Authenticator`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from ..accounts.passwords import Htpasswd
from ..api.common import ACCOUNTS, AUTHENTICATOR
from ..api.extension import ExtensionContext
from ..api.routing import add_routes, listed_routes_middleware, route_registry
from ..metadata.auth_store import AuthStore
from ..metadata.db import Database
from .accounts import bootstrap_admin
from .authenticator import Authenticator
from .state import htpasswd_middleware, token_middleware
from .tokens import TokenSigner

if TYPE_CHECKING:
    from .ldap import LdapDirectory


def setup_auth(ctx: ExtensionContext) -> None:
    app, settings = ctx.app, ctx.settings
    mode = settings.auth.mode
    if mode == "none":
        app.middlewares.append(listed_routes_middleware(route_registry(app)))
        return
    store = AuthStore(ctx.database)
    auth = Authenticator(settings, store)
    app[AUTHENTICATOR] = ctx.authenticator = auth
    if mode == "htpasswd":
        path = settings.auth.htpasswd.path
        if path is None:
            raise ValueError("auth.mode is htpasswd but auth.htpasswd.path is not set")
        auth.htpasswd = Htpasswd(path)
        app.middlewares.append(htpasswd_middleware(auth, route_registry(app)))
        return

    key_path = settings.auth.token.key_path or (settings.data / "auth" / "token-signing-key.pem")
    signer = auth.signer = TokenSigner(
        store,
        issuer=settings.auth.token.issuer,
        service=settings.auth.service,
        key_path=key_path,
        expiry=settings.auth.token.expiry,
        refresh_expiry=settings.auth.token.refresh_expiry,
    )

    directory = setup_directory(auth, ctx.database)
    setup_oidc(auth, ctx.database)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await bootstrap_admin(settings, store)
        await signer.load()
        yield
        if directory is not None:
            directory.close()
        if auth.oidc is not None:
            await auth.oidc.client.close()

    app.cleanup_ctx.append(lifecycle)
    from ..accounts.service import AccountsService

    app[ACCOUNTS] = AccountsService(ctx.database, settings)
    app.middlewares.append(token_middleware(auth, route_registry(app)))
    from . import admin_groups, admin_users  # token mode only: the others never load them
    from . import token_server as token

    add_routes(app, token.routes, admin_users.routes, admin_groups.routes)


def setup_directory(auth: Authenticator, db: Database) -> LdapDirectory | None:
    """Directory users (``auth.ldap``) and grants to groups: the hook of moorage.auth.groups."""
    ldap = auth.settings.auth.ldap
    if ldap is None:
        return None
    try:
        import ldap3  # noqa: F401
    except ImportError:
        raise ValueError("auth.ldap needs the ldap3 package: pip install 'moorage[ldap]'") from None
    from ..accounts.group_store import GroupStore
    from .groups import DirectoryUsers
    from .ldap import LdapDirectory

    directory = LdapDirectory(ldap)
    auth.directory = DirectoryUsers(ldap, directory, GroupStore(db))
    return directory


def setup_oidc(auth: Authenticator, db: Database) -> None:
    """OpenID Connect users (``auth.oidc``): the hook of moorage.auth.oidc (the browser routes
    are moorage.ui.oidc's)."""
    oidc = auth.settings.auth.oidc
    if oidc is None:
        return
    try:
        import authlib  # noqa: F401
        import joserfc  # noqa: F401
    except ImportError:
        raise ValueError("auth.oidc needs the authlib and joserfc packages: pip install 'moorage[oidc]'") from None
    from ..accounts.group_store import GroupStore
    from .oidc import OidcClient, OidcUsers
    from .oidc_store import OidcStore

    auth.oidc = OidcUsers(oidc, OidcClient(oidc), OidcStore(db), GroupStore(db))
