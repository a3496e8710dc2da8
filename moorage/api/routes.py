"""Route names, and the access rules (:class:`Rule`) a route may be declared with.

Each route is declared once, at its handler, with its name, its rule and its OpenAPI operation
(:mod:`moorage.api.routing`); the app records what it registered, and the auth middlewares
(:mod:`moorage.auth.state`, :func:`moorage.api.routing.listed_routes_middleware`) read the
matched route's rule from there.  This module only names things: a registration site names its
route with a constant from here (never a string literal; ``tests/test_routes_table.py`` scans
the package for that), so a misspelt name is an import or type error.  One name per route,
whatever ``auth.mode``; names are stable: metrics labels and the audit log use them.
"""

from __future__ import annotations

from enum import Enum


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


# gc: repository delete (moorage.gc.admin_http)
REPOSITORY_DELETE = "api_v1_repository_delete"
# proxy: pull-through cache status, mirror rules (moorage.proxy)
PROXY_STATUS = "api_v1_proxy"
MIRROR_STATUS = "api_v1_mirror_status"
MIRROR_RUN = "api_v1_mirror_run"
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
WEBHOOKS = "api_v1_webhooks"
WEBHOOK_ADD = "api_v1_webhook_add"
WEBHOOK_GET = "api_v1_webhook_get"
WEBHOOK_DELETE = "api_v1_webhook_delete"
WEBHOOK_DELIVERIES = "api_v1_webhook_deliveries"
WEBHOOK_RETRY = "api_v1_webhook_retry"
AUDIT = "api_v1_audit"
