"""The whole HTTP surface: every route name, and who may call it (its :class:`Rule`).

The auth middleware (:mod:`moorage.auth.state`) looks the matched route's name up in
:data:`RULES` and nothing else: no route-name prefixes, no ordering.  A route missing from the
table is refused (fail closed), and ``tests/test_routes_table.py`` checks that every route the
full app registers (in every ``auth.mode``) has an entry and every entry a route.

Every registration site names its route with a constant from here (never a string literal;
``tests/test_routes_table.py`` scans the package for that), so a misspelt name is an import or
type error, not a route the middleware refuses.  Some extensions register one route under a
different name depending on ``auth.mode`` (:class:`ModeNames`); both names are listed, with the
same rule.  Route names are stable: metrics labels and the audit log use them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any, NamedTuple

from aiohttp import web

from .. import errors

log = logging.getLogger("moorage.auth")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Rule(str, Enum):  # noqa: UP042 - str(Rule.X) stays "Rule.X" (StrEnum would change it)
    """Who may call a route.  What the middleware does per ``auth.mode`` (``none``: everyone
    passes everything; the handlers of METRICS still check ``metrics.access``):

    ============== ============================= ================================================
    rule           ``htpasswd``                  ``token``
    ============== ============================= ================================================
    PUBLIC         anyone                        anyone
    TOKEN_SERVER   (not registered)              anyone; the handler checks what it is given
    SESSION        anyone; the UI handler checks its session cookie (and CSRF token)
    METRICS        anyone; the handler checks the scrape credential / ``metrics.access``
    VISIBLE        any user (basic)              anyone; the handler answers with only what the
                                                 caller may pull
    REGISTRY       any user (basic)              any valid registry token (anonymous ones too)
    CATALOG        any user (basic)              token with ``registry:catalog:*``
    PULL           any user (basic)              token with ``repository:{name}:pull``
    PUSH           any user (basic)              token with ``repository:{name}:pull,push``
    DELETE         any user (basic)              token with ``repository:{name}:delete``
    AUTHENTICATED  any user (basic)              any user: basic (password / access token) or a
                                                 bearer JWT naming a user
    ADMIN          any user (basic: every        an administrator, with full (unscoped)
                   htpasswd user is one)         credentials; others get 403 DENIED
    ============== ============================= ================================================
    """

    PUBLIC = "public"
    TOKEN_SERVER = "token_server"
    SESSION = "session"
    METRICS = "metrics"
    VISIBLE = "visible"
    REGISTRY = "registry"
    CATALOG = "catalog"
    PULL = "pull"
    PUSH = "push"
    DELETE = "delete"
    AUTHENTICATED = "authenticated"
    ADMIN = "admin"


#: Rules under which the middleware looks at no credentials (the handler decides).
HANDLER_DECIDES = frozenset({Rule.PUBLIC, Rule.TOKEN_SERVER, Rule.SESSION, Rule.METRICS})
#: Rules checked against a registry token's ``access`` claim in token mode.
REGISTRY_SCOPED = frozenset({Rule.REGISTRY, Rule.CATALOG, Rule.PULL, Rule.PUSH, Rule.DELETE})
#: Repository actions a registry token must grant, per rule.
REPOSITORY_ACTIONS: dict[Rule, tuple[str, ...]] = {
    Rule.PULL: ("pull",),
    Rule.PUSH: ("pull", "push"),
    Rule.DELETE: ("delete",),
}

# -- route names ----------------------------------------------------------------------------------
# OCI distribution API (moorage.api.*)
BASE = "base"
BASE_NOSLASH = "base_noslash"
CATALOG = "catalog"
TAGS_LIST = "tags_list"
MANIFEST_GET = "manifest_get"
MANIFEST_HEAD = "manifest_head"
MANIFEST_PUT = "manifest_put"
MANIFEST_DELETE = "manifest_delete"
BLOB_HEAD = "blob_head"
BLOB_GET = "blob_get"
BLOB_DELETE = "blob_delete"
UPLOAD_START = "upload_start"
UPLOAD_START_NOSLASH = "upload_start_noslash"
UPLOAD_PATCH = "upload_patch"
UPLOAD_PUT = "upload_put"
UPLOAD_STATUS = "upload_status"
UPLOAD_CANCEL = "upload_cancel"
REFERRERS = "referrers"
HEALTHZ = "public_healthz"
READYZ = "public_readyz"
OPENAPI = "public_openapi"
# token server (moorage.auth.token_server)
AUTH_TOKEN_GET = "auth_token_get"
AUTH_TOKEN_POST = "auth_token_post"
AUTH_JWKS = "auth_jwks"
# admin API: the caller, users, grants, tokens, namespaces, visibility (moorage.auth.admin_users)
ME = "api_v1_me"
ME_TOKENS = "api_v1_me_tokens"
ME_TOKEN_ADD = "api_v1_me_token_add"
ME_TOKEN_DELETE = "api_v1_me_token_delete"
REPOSITORIES = "api_v1_repositories"
USERS = "api_v1_users"
USER_ADD = "api_v1_user_add"
USER_GET = "api_v1_user_get"
USER_DELETE = "api_v1_user_delete"
USER_PASSWORD = "api_v1_user_password"
GRANTS = "api_v1_grants"
GRANT_ADD = "api_v1_grant_add"
GRANT_DELETE = "api_v1_grant_delete"
GROUP_GRANTS = "api_v1_group_grants"
GROUP_GRANT_ADD = "api_v1_group_grant_add"
GROUP_GRANT_DELETE = "api_v1_group_grant_delete"
TOKENS = "api_v1_tokens"
TOKEN_ADD = "api_v1_token_add"
TOKEN_DELETE = "api_v1_token_delete"
NAMESPACES = "api_v1_namespaces"
NAMESPACE_ADD = "api_v1_namespace_add"
VISIBILITY = "api_v1_visibility"
# metrics (moorage.metrics)
METRICS = "metrics"


class ModeNames(NamedTuple):
    """One route registered under a name that depends on ``auth.mode`` (token mode's
    ``api_v1_*`` names date from when the middleware skipped that prefix); both are listed."""

    token: str
    other: str

    def pick(self, token_mode: bool) -> str:
        """The name to register the route under."""
        return self.token if token_mode else self.other


# gc: repository delete (moorage.gc.admin_http)
REPOSITORY_DELETE = ModeNames("api_v1_repository_delete", "gc_repository_delete")
# proxy: pull-through cache status, mirror rules (moorage.proxy)
PROXY_STATUS = ModeNames("api_v1_proxy", "proxy_status")
MIRROR_STATUS = ModeNames("api_v1_mirror_status", "mirror_status")
MIRROR_RUN = ModeNames("api_v1_mirror_run", "mirror_run")
# insight (moorage.insight.http)
INSIGHT_IMAGE = "api_v1_insight_image"
INSIGHT_SCAN = "api_v1_insight_scan"
INSIGHT_SEARCH = "api_v1_insight_search"
INSIGHT_STATUS = "api_v1_insight_status"
INSIGHT_POLICIES = "api_v1_insight_policies"
INSIGHT_POLICY_PUT = "api_v1_insight_policy_put"
INSIGHT_POLICY_DELETE = "api_v1_insight_policy_delete"
INSIGHT_ALLOWLIST = "api_v1_insight_allowlist"
INSIGHT_ALLOW = "api_v1_insight_allow"
INSIGHT_DISALLOW = "api_v1_insight_disallow"
# web UI (moorage.ui)
UI_REPOS = "public_ui_repos"
UI_REPO = "public_ui_repo"
UI_MANIFEST = "public_ui_manifest"
UI_LOGIN = "public_ui_login"
UI_LOGIN_POST = "public_ui_login_post"
UI_LOGOUT = "public_ui_logout"
UI_DELETE_CONFIRM = "public_ui_delete_confirm"
UI_DELETE = "public_ui_delete"
UI_VISIBILITY = "public_ui_visibility"
UI_REPO_DELETE_CONFIRM = "public_ui_repo_delete_confirm"
UI_REPO_DELETE = "public_ui_repo_delete"
UI_TOKENS = "public_ui_tokens"
UI_TOKENS_POST = "public_ui_tokens_post"
UI_TOKEN_REVOKE = "public_ui_token_revoke"
UI_USERS = "public_ui_users"
UI_USERS_POST = "public_ui_users_post"
UI_USER_DELETE = "public_ui_user_delete"
UI_USER_PASSWORD = "public_ui_user_password"
UI_USER_TOKEN = "public_ui_user_token"
UI_ADMIN_TOKEN_REVOKE = "public_ui_admin_token_revoke"
UI_NAMESPACES = "public_ui_namespaces"
UI_NAMESPACES_POST = "public_ui_namespaces_post"
UI_GROUP_GRANTS = "public_ui_group_grants"
UI_GROUP_GRANTS_POST = "public_ui_group_grants_post"
UI_OIDC_LOGIN = "public_ui_oidc_login"
UI_OIDC_CALLBACK = "public_ui_oidc_callback"
UI_GC = "public_ui_gc"
UI_GC_POST = "public_ui_gc_post"
UI_AUDIT = "public_ui_audit"
UI_WEBHOOKS = "public_ui_webhooks"
UI_WEBHOOKS_POST = "public_ui_webhooks_post"
UI_WEBHOOK = "public_ui_webhook"
UI_WEBHOOK_TEST = "public_ui_webhook_test"
UI_WEBHOOK_DELETE = "public_ui_webhook_delete"
UI_WEBHOOK_RETRY = "public_ui_webhook_retry"
UI_VULNDB = "public_ui_vulndb"
UI_CACHE = "public_ui_cache"
UI_STATIC = "public_ui_static"
UI_STATS = "public_ui_stats"
UI_STATS_STORAGE = "public_ui_stats_storage"
UI_STATS_ACTIVITY = "public_ui_stats_activity"
#: The web UI's routes (its middleware sets headers and renders errors for these only).
UI_ROUTES = frozenset(
    {
        UI_REPOS,
        UI_REPO,
        UI_MANIFEST,
        UI_LOGIN,
        UI_LOGIN_POST,
        UI_LOGOUT,
        UI_DELETE_CONFIRM,
        UI_DELETE,
        UI_VISIBILITY,
        UI_REPO_DELETE_CONFIRM,
        UI_REPO_DELETE,
        UI_TOKENS,
        UI_TOKENS_POST,
        UI_TOKEN_REVOKE,
        UI_USERS,
        UI_USERS_POST,
        UI_USER_DELETE,
        UI_USER_PASSWORD,
        UI_USER_TOKEN,
        UI_ADMIN_TOKEN_REVOKE,
        UI_NAMESPACES,
        UI_NAMESPACES_POST,
        UI_GROUP_GRANTS,
        UI_GROUP_GRANTS_POST,
        UI_OIDC_LOGIN,
        UI_OIDC_CALLBACK,
        UI_GC,
        UI_GC_POST,
        UI_AUDIT,
        UI_WEBHOOKS,
        UI_WEBHOOKS_POST,
        UI_WEBHOOK,
        UI_WEBHOOK_TEST,
        UI_WEBHOOK_DELETE,
        UI_WEBHOOK_RETRY,
        UI_VULNDB,
        UI_CACHE,
        UI_STATIC,
        UI_STATS,
        UI_STATS_STORAGE,
        UI_STATS_ACTIVITY,
    }
)
# events: webhooks and the audit log (moorage.events.api)
WEBHOOKS = ModeNames("api_v1_webhooks", "events_webhooks")
WEBHOOK_ADD = ModeNames("api_v1_webhook_add", "events_webhook_add")
WEBHOOK_GET = ModeNames("api_v1_webhook_get", "events_webhook_get")
WEBHOOK_DELETE = ModeNames("api_v1_webhook_delete", "events_webhook_delete")
WEBHOOK_DELIVERIES = ModeNames("api_v1_webhook_deliveries", "events_webhook_deliveries")
WEBHOOK_RETRY = ModeNames("api_v1_webhook_retry", "events_webhook_retry")
AUDIT = ModeNames("api_v1_audit", "events_audit")


def _both(rule: Rule, *routes: ModeNames) -> dict[str, Rule]:
    return {name: rule for route in routes for name in route}


#: Routes of the extensions (their handlers live with the extension).
_EXTENSIONS: dict[str, Rule] = {
    **_both(Rule.ADMIN, REPOSITORY_DELETE, PROXY_STATUS, MIRROR_STATUS, MIRROR_RUN),
    # insight: reads filtered to what the caller may pull (scan: push), policies for admins
    INSIGHT_IMAGE: Rule.VISIBLE,
    INSIGHT_SCAN: Rule.VISIBLE,
    INSIGHT_SEARCH: Rule.VISIBLE,
    INSIGHT_STATUS: Rule.VISIBLE,
    INSIGHT_POLICIES: Rule.ADMIN,
    INSIGHT_POLICY_PUT: Rule.ADMIN,
    INSIGHT_POLICY_DELETE: Rule.ADMIN,
    INSIGHT_ALLOWLIST: Rule.ADMIN,
    INSIGHT_ALLOW: Rule.ADMIN,
    INSIGHT_DISALLOW: Rule.ADMIN,
    # web UI: the handlers check the session cookie (and a CSRF token on every POST)
    **dict.fromkeys(UI_ROUTES, Rule.SESSION),
    # events: namespace admins see their own webhooks, so the handler narrows what a signed-in
    # user sees
    **_both(Rule.AUTHENTICATED, WEBHOOKS, WEBHOOK_ADD, WEBHOOK_GET, WEBHOOK_DELETE, WEBHOOK_DELIVERIES, WEBHOOK_RETRY, AUDIT),
}

#: Every route and its rule.
RULES: dict[str, Rule] = {
    BASE: Rule.REGISTRY,
    BASE_NOSLASH: Rule.REGISTRY,
    CATALOG: Rule.CATALOG,
    TAGS_LIST: Rule.PULL,
    REFERRERS: Rule.PULL,
    MANIFEST_GET: Rule.PULL,
    MANIFEST_HEAD: Rule.PULL,
    MANIFEST_PUT: Rule.PUSH,
    MANIFEST_DELETE: Rule.DELETE,
    BLOB_HEAD: Rule.PULL,
    BLOB_GET: Rule.PULL,
    BLOB_DELETE: Rule.DELETE,
    UPLOAD_START: Rule.PUSH,
    UPLOAD_START_NOSLASH: Rule.PUSH,
    UPLOAD_PATCH: Rule.PUSH,
    UPLOAD_PUT: Rule.PUSH,
    UPLOAD_STATUS: Rule.PUSH,
    UPLOAD_CANCEL: Rule.PUSH,
    HEALTHZ: Rule.PUBLIC,
    READYZ: Rule.PUBLIC,
    OPENAPI: Rule.PUBLIC,
    AUTH_TOKEN_GET: Rule.TOKEN_SERVER,
    AUTH_TOKEN_POST: Rule.TOKEN_SERVER,
    AUTH_JWKS: Rule.PUBLIC,
    # a scoped access token may not manage tokens: the handlers refuse it (403)
    ME: Rule.AUTHENTICATED,
    ME_TOKENS: Rule.AUTHENTICATED,
    ME_TOKEN_ADD: Rule.AUTHENTICATED,
    ME_TOKEN_DELETE: Rule.AUTHENTICATED,
    REPOSITORIES: Rule.ADMIN,
    USERS: Rule.ADMIN,
    USER_ADD: Rule.ADMIN,
    USER_GET: Rule.ADMIN,
    USER_DELETE: Rule.ADMIN,
    USER_PASSWORD: Rule.ADMIN,
    GRANTS: Rule.ADMIN,
    GRANT_ADD: Rule.ADMIN,
    GRANT_DELETE: Rule.ADMIN,
    GROUP_GRANTS: Rule.ADMIN,
    GROUP_GRANT_ADD: Rule.ADMIN,
    GROUP_GRANT_DELETE: Rule.ADMIN,
    TOKENS: Rule.ADMIN,
    TOKEN_ADD: Rule.ADMIN,
    TOKEN_DELETE: Rule.ADMIN,
    NAMESPACES: Rule.ADMIN,
    NAMESPACE_ADD: Rule.ADMIN,
    VISIBILITY: Rule.ADMIN,
    METRICS: Rule.METRICS,
    **_EXTENSIONS,
}


def rule_of(route_name: str | None) -> Rule | None:
    """The rule of a route; None (refuse) for a route that is not in the table."""
    return RULES.get(route_name or "")


def route_rule(request: web.Request) -> Rule | None:
    """The matched route's rule; None when routing failed (the 404/405 is the answer).
    Raises DENIED for a route missing from the table."""
    if request.match_info.http_exception is not None:
        return None
    name = getattr(request.match_info.route, "name", None)
    rule = rule_of(name)
    if rule is None:
        log.error(
            "route %r (%s %s) has no access rule in moorage.api.routes: refused",
            name,
            request.method,
            request.match_info.route.resource.canonical if request.match_info.route.resource is not None else "?",
        )
        raise errors.Denied("this route has no access rule")
    return rule


def listed_routes_middleware() -> Any:
    """``auth.mode: none`` (added by the composition root, the auth package is not even loaded): everyone may do everything, but a route missing from the table is
    still refused, so the table stays complete whatever mode the tests run in."""

    @web.middleware
    async def routes_listed(request: web.Request, handler: Handler) -> web.StreamResponse:
        route_rule(request)
        return await handler(request)

    return routes_listed
