"""One configuration model: an optional YAML file, overridden by ``MOORAGE_*`` environment variables.

Nested keys are joined by ``__`` (``MOORAGE_STORAGE__DRIVER=s3``).  Precedence, highest first:
command-line flags (applied by the CLI), environment, YAML file, defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class FilesystemStorage(BaseModel):
    #: Where blobs and upload sessions live; defaults to ``<data>/storage``.
    root: Path | None = None


class S3Storage(BaseModel):
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


class StorageSettings(BaseModel):
    driver: Literal["filesystem", "s3"] = "filesystem"
    filesystem: FilesystemStorage = FilesystemStorage()
    s3: S3Storage = S3Storage()
    #: Answer blob GETs with a 307 to a presigned URL when the driver can (S3).
    redirect: bool = False


class DatabaseSettings(BaseModel):
    #: SQLAlchemy URL; default ``sqlite+aiosqlite:///<data>/moorage.db``.  ``postgresql://`` is
    #: rewritten to the asyncpg driver.
    url: str | None = None
    #: Run migrations at start.  ``None`` means: yes for SQLite, no for PostgreSQL (where
    #: replicas would race; run ``moorage migrate`` once instead).
    auto_migrate: bool | None = None
    pool_size: int = 10


class HtpasswdSettings(BaseModel):
    path: Path | None = None
    realm: str = "Moorage Registry"


class TokenSettings(BaseModel):
    #: Token lifetime in seconds.
    expiry: int = 300
    issuer: str = "moorage"
    #: Public base URL the realm is built from; default: taken from each request's Host.
    realm: str | None = None
    #: Lifetime in seconds of refresh tokens (``offline_token``/``access_type=offline``).
    refresh_expiry: int = 30 * 24 * 3600
    #: PEM file of the signing key; default ``<data>/auth/token-signing-key.pem``.
    key_path: Path | None = None


class AuthSettings(BaseModel):
    mode: Literal["none", "htpasswd", "token"] = "none"
    service: str = "moorage"
    htpasswd: HtpasswdSettings = HtpasswdSettings()
    token: TokenSettings = TokenSettings()
    admin_user: str = "admin"
    admin_password: str | None = None
    #: Failed logins allowed per user+IP per minute before 429.
    login_rate_limit: int = 10
    #: bcrypt cost for stored passwords (tests lower it).
    bcrypt_rounds: int = 10


class TLSSettings(BaseModel):
    certificate: Path | None = None
    key: Path | None = None


class GCSettings(BaseModel):
    grace: int = 3600
    #: Run GC inside the server every N seconds (0 = never).
    interval: int = 0
    #: Scheduled runs also delete manifests no tag/index/subject reaches (``--delete-untagged``).
    delete_untagged: bool = False
    #: Upload sessions idle for longer than this (seconds) are aborted by GC.
    upload_expiry: int = 86400


class UploadSettings(BaseModel):
    """Upload sessions (issue 8): one writer at a time, and how many may be open.

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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MOORAGE_", env_nested_delimiter="__", extra="ignore")

    addr: str = "0.0.0.0:5000"
    data: Path = Path("./data")
    storage: StorageSettings = StorageSettings()
    database: DatabaseSettings = DatabaseSettings()
    auth: AuthSettings = AuthSettings()
    tls: TLSSettings = TLSSettings()
    gc: GCSettings = GCSettings()
    uploads: UploadSettings = UploadSettings()
    #: Deleting manifests, tags and blobs over the API (Distribution defaults this to off; most
    #: users expect it on).
    delete_enabled: bool = True
    max_manifest_bytes: int = 4 * 1024 * 1024
    #: Worker processes sharing the port (SO_REUSEPORT); 0 = one per CPU.
    workers: int = 1
    #: Serve Prometheus metrics on ``/metrics``.
    metrics_enabled: bool = True
    log_level: str = "info"
    access_log: bool = True

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    # -- derived values -------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self.addr.rsplit(":", 1)[0] or "0.0.0.0"

    @property
    def port(self) -> int:
        return int(self.addr.rsplit(":", 1)[1])

    @property
    def storage_root(self) -> Path:
        return self.storage.filesystem.root or (self.data / "storage")

    @property
    def database_url(self) -> str:
        url = self.database.url or f"sqlite+aiosqlite:///{(self.data / 'moorage.db').resolve()}"
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                url = "postgresql+asyncpg://" + url[len(prefix):]
        if url.startswith("sqlite:///"):
            url = "sqlite+aiosqlite:///" + url[len("sqlite:///"):]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the file named by ``MOORAGE_CONFIG`` (the CLI's ``--config`` sets it)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("MOORAGE_CONFIG")
        if not path:
            return {}
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the config file must hold a mapping")
        return data


def load_settings(config: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build the settings; ``overrides`` (from CLI flags) win over everything else."""
    if config is not None:
        os.environ["MOORAGE_CONFIG"] = str(config)
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)
