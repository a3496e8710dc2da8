"""One configuration model: an optional YAML file, overridden by ``MOORAGE_*`` environment variables.

Nested keys are joined by ``__`` (``MOORAGE_STORAGE__DRIVER=s3``).  Precedence, highest first:
command-line flags (applied by the CLI), environment, YAML file, defaults.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class _Section(BaseModel):
    """A settings section: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


def split_addr(addr: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) -> (host, port); ``ValueError`` naming what is wrong."""
    host, sep, port = addr.rpartition(":")
    if not sep:
        raise ValueError(f"addr {addr!r} has no port (use HOST:PORT, e.g. 0.0.0.0:5000)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif "[" in host or "]" in host:
        raise ValueError(f"addr {addr!r} is not HOST:PORT ([v6-address]:PORT for IPv6)")
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"addr {addr!r}: port must be a number from 1 to 65535")
    return host or "0.0.0.0", int(port)


class FilesystemStorage(_Section):
    #: Where blobs and upload sessions live; defaults to ``<data>/storage``.
    root: Path | None = None


class S3Storage(_Section):
    bucket: str = ""
    prefix: str = ""
    region: str = "us-east-1"
    endpoint_url: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    path_style: bool = True
    #: Size of multipart-upload parts (S3 needs >= 5 MiB except the last part).
    part_size: int = 16 * 1024 * 1024
    presign_expiry: int = 1200
    #: Endpoint put into presigned redirect URLs when clients reach S3 under another name
    #: than the registry does (e.g. ``http://minio:9000`` inside, a public name outside).
    public_endpoint_url: str | None = None
    #: Connection pool size towards S3.
    max_connections: int = 64


class StorageSettings(_Section):
    driver: Literal["filesystem", "s3"] = "filesystem"
    filesystem: FilesystemStorage = FilesystemStorage()
    s3: S3Storage = S3Storage()
    #: Answer blob GETs with a 307 to a presigned URL when the driver can (S3).
    redirect: bool = False


class DatabaseSettings(_Section):
    #: SQLAlchemy URL; default ``sqlite+aiosqlite:///<data>/moorage.db``.  ``postgresql://`` is
    #: rewritten to the asyncpg driver.
    url: str | None = None
    #: Run migrations at start.  ``None`` means: yes for SQLite, no for PostgreSQL (where
    #: replicas would race; run ``moorage migrate`` once instead).
    auto_migrate: bool | None = None
    pool_size: int = 10


class HtpasswdSettings(_Section):
    path: Path | None = None
    realm: str = "Moorage Registry"


class TokenSettings(_Section):
    #: Token lifetime in seconds.
    expiry: int = 300
    issuer: str = "moorage"
    #: Public base URL the realm is built from; default: taken from each request's Host.
    realm: str | None = None
    #: Lifetime in seconds of refresh tokens (``offline_token``/``access_type=offline``).
    refresh_expiry: int = 30 * 24 * 3600
    #: PEM file of the signing key; default ``<data>/auth/token-signing-key.pem``.
    key_path: Path | None = None


class LdapSettings(_Section):
    """``auth.ldap``: sign in with an LDAP directory / Active Directory (token mode).

    Moorage searches ``user_base`` for ``user_filter`` as the service account (``bind_dn``),
    then binds as the user found with the password given; groups come from ``group_filter``
    under ``group_base`` and/or the user's ``member_of_attribute``.  See docs/auth.md."""

    #: ``ldap://host[:port]`` or ``ldaps://host[:port]``.
    url: str
    bind_dn: str = ""
    #: The service account's password.  Never logged.
    bind_password: SecretStr = SecretStr("")
    user_base: str
    #: ``{username}`` is replaced by the RFC 4515-escaped name signing in.
    user_filter: str = "(uid={username})"
    #: The attribute holding the sign-in name (``uid``; ``sAMAccountName`` for AD).
    username_attribute: str = "uid"
    group_base: str = ""
    #: ``{dn}`` is the user's escaped DN, ``{username}`` the escaped name; empty: no search.
    group_filter: str = "(member={dn})"
    #: The group attribute that names a group (its ``cn``).
    group_name_attribute: str = "cn"
    #: Also (or only) read groups from this user attribute (``memberOf`` on AD / OpenLDAP's
    #: memberof overlay); the group's name is the first RDN value of each DN.
    member_of_attribute: str | None = None
    #: Members of any of these groups are administrators.
    admin_groups: list[str] = []
    start_tls: bool = False
    #: CA bundle to verify the server's certificate (ldaps:// or start_tls); default: system CAs.
    ca_file: Path | None = None
    #: Seconds to open a connection / to wait for any answer.
    connect_timeout: float = Field(5.0, gt=0, le=60)
    timeout: float = Field(10.0, gt=0, le=120)
    #: Seconds a user's directory entry and groups are believed before they are read again
    #: (at the next sign-in, token request or registry request): the longest a removal from
    #: the directory or from a group takes to be effective.
    cache_ttl: float = Field(300.0, ge=0, le=86400)

    @field_validator("url")
    @classmethod
    def _ldap_url(cls, value: str) -> str:
        if not re.fullmatch(r"ldaps?://[^/\s?#]+/?", value):
            raise ValueError(f"auth.ldap.url {value!r} is not ldap://HOST[:PORT] or ldaps://HOST[:PORT]")
        return value.rstrip("/")

    @field_validator("user_filter")
    @classmethod
    def _has_username(cls, value: str) -> str:
        if "{username}" not in value or not (value.startswith("(") and value.endswith(")")):
            raise ValueError("auth.ldap.user_filter must be a parenthesised filter holding {username}, e.g. (uid={username})")
        return value

    @field_validator("group_filter")
    @classmethod
    def _group_filter(cls, value: str) -> str:
        if value and not (value.startswith("(") and value.endswith(")")):
            raise ValueError("auth.ldap.group_filter must be a parenthesised filter, e.g. (member={dn})")
        return value

    @model_validator(mode="after")
    def _tls_sense(self) -> LdapSettings:
        if self.start_tls and self.url.startswith("ldaps://"):
            raise ValueError("auth.ldap: start_tls is for ldap:// URLs (ldaps:// is TLS from the start)")
        if self.group_filter and not self.group_base and not self.member_of_attribute:
            raise ValueError("auth.ldap: set group_base for group_filter (or member_of_attribute, or group_filter: '')")
        return self


class OidcSettings(_Section):
    """``auth.oidc``: web UI sign-in with an OpenID Connect provider (Keycloak, Authentik,
    Authelia, Dex ...): authorization code + PKCE (S256), state and nonce, ID token verified
    against the provider's JWKS.  Registry clients use access tokens made in the UI.  The
    redirect URI to register is ``<registry URL>/auth/oidc/callback`` (the URL is
    ``auth.token.realm`` if set, else the request's).  See docs/auth.md."""

    #: The issuer URL; ``<issuer>/.well-known/openid-configuration`` is read from it.
    issuer: str
    client_id: str = Field(min_length=1, max_length=255)
    #: Never logged.
    client_secret: SecretStr
    scopes: list[str] = ["openid", "profile", "email"]
    #: The claim that names the Moorage user (a valid user name: lower-case, digits, . _ -).
    username_claim: str = "preferred_username"
    #: The claim listing the user's groups (ID token, else userinfo); none: no groups.
    groups_claim: str = "groups"
    admin_groups: list[str] = []
    #: The sign-in page's button: "Sign in with <display_name>".
    display_name: str = Field("SSO", min_length=1, max_length=64)
    #: Seconds to wait for the provider.
    timeout: float = Field(10.0, gt=0, le=120)
    #: Seconds a user's groups are believed before they are read again from the provider
    #: (a refresh-token grant): the longest a removal at the provider takes to be effective.
    cache_ttl: float = Field(300.0, ge=0, le=86400)

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s?#]+", value):
            raise ValueError(f"auth.oidc.issuer {value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("scopes")
    @classmethod
    def _openid_scope(cls, value: list[str]) -> list[str]:
        if "openid" not in value:
            raise ValueError("auth.oidc.scopes must include 'openid'")
        if any(not s or not re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]+", s) for s in value):
            raise ValueError("auth.oidc.scopes: each scope is one token of printable characters (RFC 6749 3.3)")
        return value


class AuthSettings(_Section):
    mode: Literal["none", "htpasswd", "token"] = "none"
    #: Directory users (token mode); None = local users only.
    ldap: LdapSettings | None = None
    #: OpenID Connect sign-in for the web UI (token mode); None = off.
    oidc: OidcSettings | None = None
    service: str = "moorage"
    htpasswd: HtpasswdSettings = HtpasswdSettings()
    token: TokenSettings = TokenSettings()
    admin_user: str = "admin"
    admin_password: str | None = None
    #: Failed logins allowed per user+IP per minute before 429.
    login_rate_limit: int = 10
    #: bcrypt cost for stored passwords (tests lower it).
    bcrypt_rounds: int = 10

    @model_validator(mode="after")
    def _directories_need_tokens(self) -> AuthSettings:
        if self.ldap is not None and self.mode != "token":
            raise ValueError("auth.ldap needs auth.mode: token")
        if self.oidc is not None and self.mode != "token":
            raise ValueError("auth.oidc needs auth.mode: token")
        return self


class TLSSettings(_Section):
    certificate: Path | None = None
    key: Path | None = None


class GCSettings(_Section):
    grace: int = 3600
    #: Run GC inside the server every N seconds (0 = never).
    interval: int = 0
    #: Scheduled runs also delete untagged manifests no tag delete left behind (pushed by digest,
    #: or left by a tag that moved; ``--delete-untagged``).  Without it, images a tag delete left
    #: untagged are still collected once ``grace`` has passed.
    delete_untagged: bool = False
    #: Upload sessions idle for longer than this (seconds) are aborted by GC.
    upload_expiry: int = 86400
    #: How long (seconds) a server keeps its list of storage quotas before reading it again: a
    #: quota set by another process (CLI, other worker or replica) applies within this; one set
    #: through this server applies at once.  0 = read it on every upload request.
    quota_cache_seconds: float = Field(default=2.0, ge=0)


class MetricsSettings(_Section):
    """Who may read ``/metrics`` (see docs/auth.md, "Metrics")."""

    #: ``auto``: ``public`` when ``auth.mode`` is ``none``, else ``admin``.  ``authenticated``:
    #: any signed-in user; ``admin``: administrators (in htpasswd mode: any user in the file).
    access: Literal["auto", "public", "authenticated", "admin"] = "auto"
    #: A scrape credential: ``Authorization: Bearer <token>`` is let in whatever ``access`` says
    #: (Prometheus: ``authorization: {credentials: ...}``).  Never logged.
    token: SecretStr | None = None


class InsightSettings(_Section):
    """Image insight: SBOMs on push, offline vulnerability matching, pull policy."""

    enabled: bool = True
    #: Inventory every image pushed (a background job; ``moorage sbom`` does it by hand).  Off by
    #: default: it adds two referrers (CycloneDX, SPDX) to every image, which clients listing
    #: referrers (``oras discover``, ``cosign tree``) then see.
    scan_on_push: bool = False
    #: Per-image bounds: wall-clock seconds (waiting for memory, reading, parsing, whiteouts),
    #: decompressed bytes per layer, one package database (streamed), one file parsed whole
    #: (``package.json``), what one image's scan keeps; and what all scans of the process keep
    #: together (docs/integrity.md, "Scanner bounds").
    max_seconds: float = 900.0
    max_layer_bytes: int = 32 << 30
    max_file_bytes: int = 64 << 20
    max_buffered_bytes: int = 1 << 20
    max_image_bytes: int = 16 << 20
    max_process_bytes: int = 64 << 20
    #: Images waiting for a scan in one process; pushes beyond it are scanned by ``moorage sbom --all``.
    queue_size: int = 10000


class ProxyUpstream(_Section):
    """One upstream registry served through the pull-through cache (``moorage.proxy``)."""

    #: Short name used in logs, metrics and the admin API.
    name: str
    #: ``https://registry-1.docker.io`` or ``http://127.0.0.1:5001``.
    url: str
    #: Local namespace the upstream is served under (``hub`` -> ``/v2/hub/...``); ``""`` makes
    #: the whole registry a mirror of this upstream (dockerd ``registry-mirrors``).
    namespace: str = ""
    username: str | None = None
    password: str | None = None
    #: Read the password from this environment variable instead (keeps it out of the file).
    password_env: str | None = None
    #: Seconds a cached tag is served before it is re-validated upstream with a HEAD.
    tag_ttl: int = 300
    #: Verify the upstream's TLS certificate; ``ca_file`` adds a CA bundle.
    tls_verify: bool = True
    ca_file: Path | None = None
    #: Seconds to wait for the upstream to answer (connect + headers).
    timeout: float = Field(30.0, gt=0)
    #: Seconds the upstream may stay silent in the middle of an answer (one idle read); a
    #: stalled download is dropped (503 to the client, nothing stored).  A whole layer has no
    #: total time limit: only silence ends it.
    read_timeout: float = Field(60.0, gt=0, le=3600)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
            raise ValueError(f"upstream url must be http(s)://HOST[:PORT], got {value!r}")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        import re

        value = value.strip("/")
        if value and not re.fullmatch(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*", value):
            raise ValueError(f"namespace {value!r} is not a valid repository name prefix")
        return value

    @model_validator(mode="after")
    def _password_env(self) -> ProxyUpstream:
        if self.password_env and self.password_env not in os.environ:
            raise ValueError(f"upstream {self.name!r}: environment variable {self.password_env} is not set")
        return self


class MirrorRule(_Section):
    """A scheduled ``moorage mirror SRC DST`` run inside the server (pull- or push-based: either
    side may be this registry, addressed by its URL)."""

    name: str
    #: ``[http://|https://]HOST[:PORT]/REPO[:TAG]``, as on the command line.
    src: str
    dst: str
    src_username: str | None = None
    src_password_env: str | None = None
    dest_username: str | None = None
    dest_password_env: str | None = None
    #: Seconds between the end of one run and the start of the next.
    interval: int = Field(3600, ge=1)
    tags: str | None = None
    platforms: list[str] = Field(default_factory=list)
    src_tls_verify: bool = True
    dest_tls_verify: bool = True

    @field_validator("src", "dst")
    @classmethod
    def _ref(cls, value: str) -> str:
        from .registry.references import RegistryRef

        RegistryRef.parse(value)
        return value

    @model_validator(mode="after")
    def _password_envs(self) -> MirrorRule:
        for env in (self.src_password_env, self.dest_password_env):
            if env and env not in os.environ:
                raise ValueError(f"mirror rule {self.name!r}: environment variable {env} is not set")
        return self


class ProxySettings(_Section):
    upstreams: list[ProxyUpstream] = Field(default_factory=list)
    #: Scheduled replication (``moorage.proxy.schedule``); status in ``/api/v1/mirror``.
    mirror_rules: list[MirrorRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ProxySettings:
        for what, values in (
            ("upstream names", [u.name for u in self.upstreams]),
            ("upstream namespaces", [u.namespace for u in self.upstreams]),
            ("mirror rule names", [r.name for r in self.mirror_rules]),
        ):
            if len(set(values)) != len(values):
                raise ValueError(f"{what} must be unique")
        return self


class HttpSettings(_Section):
    """Limits that keep hostile or broken clients from holding the server (per worker process)."""

    #: Seconds a connection may take to send a complete request head (slowloris).
    header_timeout: float = Field(30.0, gt=0)
    #: Seconds a request body may go without a byte arriving before the connection is closed.
    body_timeout: float = Field(60.0, gt=0)
    #: Open connections per worker; more get a 503 UNAVAILABLE and are closed.
    max_connections: int = Field(4096, ge=1)
    #: Seconds an idle keep-alive connection stays open.
    keepalive_timeout: float = Field(75.0, gt=0)


#: Upper bound of a webhook's ``timeout`` (seconds): a receiver that never answers frees its
#: delivery slot after at most this long.
MAX_WEBHOOK_TIMEOUT = 30.0


class WebhookEndpoint(_Section):
    """One webhook receiver (``webhooks:`` list in the config file; more via /api/v1/webhooks)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2048)
    #: HMAC-SHA256 key of ``X-Moorage-Signature``; or name an environment variable in ``secret_env``.
    secret: SecretStr | None = None
    secret_env: str | None = None
    format: Literal["distribution", "cloudevents"] = "distribution"
    actions: list[Literal["push", "pull", "delete", "mount"]] = ["push", "delete"]
    #: Repository patterns (``*`` matches any run of characters, ``/`` included).
    repositories: list[str] = ["*"]
    #: What an event is about: manifests (pushes carry their tag), tag deletes, and optionally blobs.
    targets: list[Literal["manifest", "tag", "blob", "repository"]] = ["manifest", "tag", "repository"]
    #: Seconds one delivery may take (connect + answer); at most ``MAX_WEBHOOK_TIMEOUT`` (30 s),
    #: so a receiver that never answers holds a delivery slot for a bounded time.
    timeout: float = Field(default=5.0, gt=0, le=MAX_WEBHOOK_TIMEOUT)
    #: Failed attempts after which a delivery is dead-lettered.
    max_attempts: int = Field(default=10, ge=1, le=1000)
    #: Extra request headers (e.g. ``Authorization``).
    headers: dict[str, str] = {}

    @field_validator("repositories")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for p in value:
            if len(p) > 255 or not _REPO_PATTERN.match(p) or "//" in p:
                raise ValueError(f"invalid repository pattern {p[:100]!r}")
        return value

    @field_validator("actions", "targets", "repositories")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must not be empty")
        return value

    # Field validators above, not here: a model-level error message would quote the whole
    # input, secret included.
    @model_validator(mode="after")
    def _check(self) -> WebhookEndpoint:
        if not self.secret_value():
            raise ValueError(f"webhook {self.name!r}: set secret (or secret_env): every delivery is signed")
        return self

    def secret_value(self) -> str:
        if self.secret is not None:
            return self.secret.get_secret_value()
        if self.secret_env:
            value = os.environ.get(self.secret_env)
            if value is None:
                raise ValueError(f"webhook {self.name!r}: environment variable {self.secret_env} is not set")
            return value
        return ""


_REPO_PATTERN = re.compile(r"^[a-z0-9*][a-z0-9._/*-]*$")


class WebhookRules(_Section):
    """Who may create webhooks through ``/api/v1/webhooks`` and where they may point
    (``events.webhooks``; docs/events.md)."""

    #: Namespace administrators (``admin`` on ``NS/*``, or a user for their own namespace) may
    #: create webhooks for their namespace.  Off: administrators only.
    namespace_admins: bool = False
    #: CIDRs a namespace administrator's webhook may reach although they are loopback,
    #: link-local or private (anything not globally routable is refused otherwise).  Checked
    #: on the address each delivery connects to.  Administrators' webhooks are not restricted.
    allowed_networks: list[str] = Field(default=[], max_length=100)

    @field_validator("allowed_networks")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"not a network (CIDR): {item[:60]!r}") from None
        return value


class EventsSettings(_Section):
    """Webhook delivery, audit log and operational metrics (``moorage.events``)."""

    #: Off: no webhooks, audit log or registry gauges at all (the extension is not wired in).
    enabled: bool = True
    #: Days audit entries are kept (pruned by the background job; 0 = forever).
    audit_retention_days: float = Field(default=90, ge=0)
    #: Pulls in the audit log: ``aggregate`` = one entry per (actor, repository, digest) per
    #: ``audit_pull_window`` seconds; ``all``; ``none``.
    audit_pulls: Literal["aggregate", "all", "none"] = "aggregate"
    audit_pull_window: int = Field(default=3600, ge=1)
    #: Successful logins are aggregated the same way per (user, address); failures are all kept.
    audit_login_window: int = Field(default=3600, ge=1)
    #: First retry after this many seconds, doubling up to ``retry_backoff_max``.
    retry_backoff: float = Field(default=1.0, gt=0)
    retry_backoff_max: float = Field(default=300.0, gt=0)
    #: How often the delivery job looks for due deliveries written by other replicas.
    delivery_poll_interval: float = Field(default=1.0, gt=0)
    #: Deliveries in flight at once (per process), over all endpoints.
    delivery_concurrency: int = Field(default=32, ge=1, le=256)
    #: Deliveries in flight at once to one endpoint (per process): a slow endpoint delays itself.
    delivery_per_endpoint: int = Field(default=2, ge=1, le=64)
    #: Deliveries in flight at once to the endpoints of one namespace (or one creator; the
    #: config-file endpoints count as one); never more than half of ``delivery_concurrency``.
    delivery_per_namespace: int = Field(default=8, ge=1, le=256)
    #: Days delivered (and dead) deliveries stay visible in the history.
    delivery_history_days: float = Field(default=7, ge=0)
    #: Seconds between recomputations of the storage/backlog gauges from the database.
    stats_interval: float = Field(default=60.0, gt=0)
    #: CloudEvents ``source`` and Distribution ``source.addr`` (default: the request's Host).
    source: str | None = None
    #: Who may create webhooks, and where a namespace administrator's may point.
    webhooks: WebhookRules = WebhookRules()


class UISettings(_Section):
    """The web UI at ``/``."""

    enabled: bool = True
    #: Lifetime in seconds of a browser session after sign-in.
    session_ttl: int = 12 * 3600
    #: Days of hourly push/pull counts kept for the activity chart.
    activity_days: int = 14
    #: Repositories (and tags) per page.
    page_size: int = 50


class UploadSettings(_Section):
    """Upload sessions: one writer at a time, and how many may be open.

    Defaults: docker, podman and containerd keep at most 3-5 sessions open per push and close
    them at its end, so 200 per user allows ~40 concurrent pushes by one CI account; 1000 per
    repository bounds what any set of accounts can pin in one repository.  Each open session
    costs a database row and a directory or prefix in storage until it completes, is cancelled
    or expires (``gc.upload_expiry``).  0 turns a cap off.
    """

    max_sessions_per_repository: int = Field(1000, ge=0)
    #: Per authenticated user; anonymous clients are counted per remote address.
    max_sessions_per_user: int = Field(200, ge=0)
    #: Seconds a request's claim on a session holds without renewal (renewed every third of
    #: it while the request runs): how long a session stays blocked after its writer crashed.
    writer_lease: float = Field(60.0, ge=5.0)


class Settings(BaseModel):
    """The whole configuration, as a plain model: ``Settings(**values)`` validates exactly
    ``values`` and reads nothing else.  Where values come from -- command-line flags,
    ``MOORAGE_*`` variables, a config file -- is decided by one loader, :func:`load_settings`
    (sources merged by :func:`settings_from_sources`, the rules of :mod:`moorage.config_env`)."""

    # Unknown keys are errors (a typo such as ``auth: {mdoe: token}`` must not start an open
    # registry); :func:`check_unknown_keys` names them with the closest valid key first.  The
    # other two: what pydantic-settings' BaseSettings validated with.
    model_config = ConfigDict(extra="forbid", validate_default=True, arbitrary_types_allowed=True)

    addr: str = "0.0.0.0:5000"
    data: Path = Path("./data")
    storage: StorageSettings = StorageSettings()
    database: DatabaseSettings = DatabaseSettings()
    auth: AuthSettings = AuthSettings()
    tls: TLSSettings = TLSSettings()
    gc: GCSettings = GCSettings()
    insight: InsightSettings = InsightSettings()
    ui: UISettings = UISettings()
    uploads: UploadSettings = UploadSettings()
    #: Deleting manifests, tags and blobs over the API (Distribution defaults this to off; most
    #: users expect it on).
    delete_enabled: bool = True
    max_manifest_bytes: int = 4 * 1024 * 1024
    #: Worker processes sharing the port (SO_REUSEPORT); 0 = one per CPU.
    workers: int = 1
    #: Serve Prometheus metrics on ``/metrics``.
    metrics_enabled: bool = True
    metrics: MetricsSettings = MetricsSettings()
    log_level: str = "info"
    #: How ``moorage serve`` writes its log to standard error: ``text`` (readable lines),
    #: ``json`` (one object per line, for collectors) or ``auto`` (text on a terminal, else JSON).
    log_format: Literal["auto", "text", "json"] = "auto"
    access_log: bool = True
    #: Pull-through cache upstreams (``moorage.proxy``).
    proxy: ProxySettings = ProxySettings()
    http: HttpSettings = HttpSettings()

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"):
            raise ValueError(f"unknown log level {value!r} (use debug, info, warning, error or critical)")
        return value

    @field_validator("addr")
    @classmethod
    def _host_and_port(cls, value: str) -> str:
        split_addr(value)
        return value

    #: Webhook endpoints; ``events`` tunes delivery, the audit log and metrics.
    webhooks: list[WebhookEndpoint] = []
    events: EventsSettings = EventsSettings()

    @field_validator("webhooks")
    @classmethod
    def _unique_webhooks(cls, value: list[WebhookEndpoint]) -> list[WebhookEndpoint]:
        names = [w.name for w in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate webhook name(s): {', '.join(dupes)}")
        return value

    # -- derived values -------------------------------------------------------------------
    @property
    def host(self) -> str:
        return split_addr(self.addr)[0]

    @property
    def port(self) -> int:
        return split_addr(self.addr)[1]

    @property
    def storage_root(self) -> Path:
        return self.storage.filesystem.root or (self.data / "storage")

    @property
    def database_url(self) -> str:
        url = self.database.url or f"sqlite+aiosqlite:///{(self.data / 'moorage.db').resolve()}"
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                url = "postgresql+asyncpg://" + url[len(prefix) :]
        if url.startswith("sqlite:///"):
            url = "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


#: Every setting's variable: ``MOORAGE_<FIELD>[__<KEY>...]`` (``MOORAGE_STORAGE__S3__BUCKET``).
ENV_PREFIX = "MOORAGE_"
#: ``MOORAGE_*`` variables that are not settings: read by the code (first three) or by the test
#: harness and CI scripts.  Any other unknown ``MOORAGE_*`` variable is an error.
NOT_SETTINGS = frozenset(
    {
        "MOORAGE_CONFIG",
        "MOORAGE_RESUMABLE_HASH",
        "MOORAGE_RUN_AS",
        "MOORAGE_GC_TEST_PAUSE_AFTER_TOMBSTONE",
        "MOORAGE_CLIENT_TIMEOUT",
        "MOORAGE_DISTRIBUTION_BIN",
        "MOORAGE_DOCKER_BIN",
        "MOORAGE_KEEP_SERVICE_DIRS",
        "MOORAGE_PG_BINDIR",
        "MOORAGE_PODMAN_STORAGE_DRIVER",
        "MOORAGE_REQUIRE_CLIENTS",
        # test hooks of the collector and the importer, image-build and test-harness knobs
        "MOORAGE_GC_TEST_PAUSE_BEFORE_SWEEP",
        "MOORAGE_GC_TEST_WAIT_BEFORE_MANIFEST_DELETE",
        "MOORAGE_GC_TEST_PAUSE_AFTER_MANIFEST_BATCH",
        "MOORAGE_IMPORT_CRASH_AFTER_BLOBS",
        "MOORAGE_TEST_PAUSE_BEFORE_COMMIT",
        "MOORAGE_TEST_PAUSE_AFTER_COMMIT",
        "MOORAGE_BASE_IMAGE",
        "MOORAGE_BUILD_TOOL",
        "MOORAGE_DEBIAN_MIRROR",
        "MOORAGE_IMAGE",
        "MOORAGE_IMAGE_CACHE",
        "MOORAGE_IMAGE_EXTRAS",
        "MOORAGE_PODMAN_RUNTIME",
        "MOORAGE_CHROMIUM",
        "MOORAGE_SCREENSHOTS",
        "MOORAGE_FUZZ_EXAMPLES",
        "MOORAGE_FUZZ_RANDOM",
        "MOORAGE_INSTRUMENT_DIR",
    }
)
#: Prefix of test-harness variables (``MOORAGE_TEST_BACKENDS`` ...).
NOT_SETTINGS_PREFIX = "MOORAGE_TEST_"


class UnknownSettingError(ValueError):
    """A configuration key or ``MOORAGE_*`` variable that names no setting."""


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class a field holds (also inside ``X | None``), else None."""
    candidates = [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        candidates = list(typing.get_args(annotation))
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else f" (valid keys here: {', '.join(sorted(valid))})"


def _check_mapping(data: dict[str, Any], model: type[BaseModel], where: str, source: str) -> None:
    fields = model.model_fields
    for key, value in data.items():
        path = f"{where}{key}"
        if key not in fields:
            valid = [f"{where}{k}" for k in fields]
            raise UnknownSettingError(f"{source}: unknown configuration key {path}{_suggest(path, valid)}")
        sub = _section_model(fields[key].annotation)
        if sub is not None and isinstance(value, dict):
            _check_mapping(value, sub, f"{path}.", source)


def _env_names(model: type[BaseModel], prefix: str) -> list[str]:
    names: list[str] = []
    for key, field in model.model_fields.items():
        name = f"{prefix}{key.upper()}"
        names.append(name)
        sub = _section_model(field.annotation)
        if sub is not None:
            names.extend(_env_names(sub, name + "__"))
    return names
