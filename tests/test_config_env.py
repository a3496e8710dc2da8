"""moorage/config_env.py reads ``MOORAGE_*`` variables exactly as pydantic-settings did.

The library stays a test dependency for this: its own ``EnvSettingsSource`` and its own merge
of the sources (``BaseSettings._settings_build_values``) are run on the same generated
environments as ours -- every variable name the settings tree has (mixed case too), nested
names through scalars and lists, unknown keys, a section given as JSON and overridden key by
key in either order, malformed JSON, empty strings -- and must give the same values, the same
validated settings, or the same error.  A field added later is covered without touching this
file; one whose type the port does not handle makes it fail.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from pydantic_settings import BaseSettings, EnvSettingsSource
from pydantic_settings.sources import DefaultSettingsSource, InitSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from moorage.config import Settings, _section_model
from moorage.config_env import EnvReader, SettingsError
from moorage.config_load import load_settings, settings_from_sources

pytestmark = pytest.mark.unit


def _names(model: type[BaseModel], prefix: str = "MOORAGE_") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        assert field.alias is None and field.validation_alias is None, f"{name}: aliases are not ported"
        out.append(prefix + name.upper())
        sub = _section_model(field.annotation)
        if sub is not None:
            out.extend(_names(sub, prefix + name.upper() + "__"))
    return out


NAMES = _names(Settings)
ODD_NAMES = [
    "MOORAGE_STORAGE__NOPE",
    "MOORAGE_ADDR__X",  # below a scalar
    "MOORAGE_WEBHOOKS__NAME",  # below a list of models
    "MOORAGE_WEBHOOKS__0__URL",
    "MOORAGE_PROXY__UPSTREAMS__NAME",
    "MOORAGE_WEBHOOKS__HEADERS__X-Token",  # a dict below a list of models
    "MOORAGE_STORAGE__S3__BUCKET__DEEPER",
    "MOORAGE_STORAGE__MOORAGE_DRIVER",
    "MOORAGE_STORAGE____DRIVER",
    "MOORAGE_STORAGE__",
    "moorage_auth__Token__expiry",
    "MOORAGE_CONFIGX",
    "OTHER_VAR",
]
VALUES = [
    "",
    "x",
    "0",
    "1",
    "true",
    "null",
    "[]",
    "{}",
    "60.5",
    "s3",
    "token",
    "Ä ö 👩\u200d💻",
    '{"driver": "s3"}',
    '{"driver": "filesystem", "s3": {"bucket": "b"}}',
    '{"bucket": "j", "region": "r"}',
    '{"expiry": 9}',
    '["*"]',
    '[{"name": "a", "url": "http://h/", "secret": "s"}]',
    '{"a": {"b": 1}}',
    "not json{",
    '"quoted"',
]


def _reference_env(environ: dict[str, str]) -> dict[str, Any]:
    src = EnvSettingsSource(Settings, case_sensitive=False, env_prefix="MOORAGE_", env_nested_delimiter="__")  # type: ignore[arg-type]
    src.env_vars = parse_env_vars(environ, False, False, None)
    return src()


def _outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except Exception as exc:  # noqa: BLE001 - compared by type and text
        return type(exc).__name__, str(exc)


def _environments(seed: int, count: int) -> list[dict[str, str]]:
    rnd = random.Random(seed)
    pool = NAMES + ODD_NAMES + [n.lower() for n in NAMES[:8]]
    out = []
    for _ in range(count):
        env: dict[str, str] = {}
        for name in rnd.sample(pool, rnd.randint(1, 5)):
            env[name] = rnd.choice(VALUES)
        out.append(env)
    return out


# A section as JSON and a key of it by name, in both orders; the same name in two cases.
HANDMADE = [
    {"MOORAGE_STORAGE": '{"driver": "s3", "s3": {"bucket": "j"}}', "MOORAGE_STORAGE__S3__REGION": "r"},
    {"MOORAGE_STORAGE__S3__REGION": "r", "MOORAGE_STORAGE": '{"driver": "s3", "s3": {"bucket": "j"}}'},
    {"MOORAGE_STORAGE__S3": '{"bucket": "j"}', "MOORAGE_STORAGE__S3__BUCKET": "k"},
    {"MOORAGE_STORAGE__S3__BUCKET": "k", "MOORAGE_STORAGE__S3": '{"bucket": "j"}'},
    {"MOORAGE_AUTH__MODE": "token", "moorage_auth__mode": "htpasswd"},
    {"MOORAGE_STORAGE": "not json"},
    {"MOORAGE_STORAGE__S3": "not json"},
    {"MOORAGE_WEBHOOKS": "[{"},
    {"MOORAGE_WEBHOOKS": '[{"name": "a", "url": "http://h/", "secret": "s"}]'},
    {"MOORAGE_METRICS__TOKEN": "s3cret", "MOORAGE_DATABASE__AUTO_MIGRATE": "false", "MOORAGE_GC__QUOTA_CACHE_SECONDS": "0.5"},
    {"MOORAGE_TLS__CERTIFICATE": "", "MOORAGE_DATABASE__URL": ""},
    {"MOORAGE_PROXY__UPSTREAMS": '[{"name": "hub", "url": "https://r.example"}]', "MOORAGE_PROXY__MIRROR_RULES": "[]"},
    {"MOORAGE_DATA": "/srv/d", "MOORAGE_ADDR": "[::1]:5000", "MOORAGE_WORKERS": "0"},
]


@pytest.mark.parametrize("seed", range(6))
def test_environment_values_equal_the_librarys(seed: int) -> None:
    envs = HANDMADE + _environments(seed, 250) if seed == 0 else _environments(seed, 250)
    kinds = set()
    for env in envs:
        expected = _outcome(lambda: _reference_env(env))
        got = _outcome(lambda: EnvReader(env, "MOORAGE_").values(Settings))
        assert got == expected, env
        kinds.add(expected[0])
    if seed == 0:
        assert kinds == {"ok", "SettingsError"}  # the environments reach both outcomes


def _reference_settings(env: dict[str, str], kwargs: dict[str, Any], file_data: dict[str, Any]) -> Settings:
    init = InitSettingsSource(Settings, kwargs)  # type: ignore[arg-type]
    src = EnvSettingsSource(Settings, case_sensitive=False, env_prefix="MOORAGE_", env_nested_delimiter="__")  # type: ignore[arg-type]
    src.env_vars = parse_env_vars(env, False, False, None)

    def file_source() -> dict[str, Any]:
        return file_data

    sources = (init, src, file_source, DefaultSettingsSource(Settings))  # type: ignore[arg-type]
    # The library's merge, run for our model (it needs only these three of a settings class).
    cls = SimpleNamespace(
        model_fields=Settings.model_fields,
        model_config=Settings.model_config,
        _settings_restore_init_kwarg_names=BaseSettings._settings_restore_init_kwarg_names,
    )
    state = BaseSettings._settings_build_values.__func__(cls, sources, kwargs)  # type: ignore[attr-defined]
    return Settings.model_validate(state)


FILES: list[dict[str, Any]] = [
    {},
    {"storage": {"driver": "s3", "s3": {"bucket": "f", "region": "eu"}}, "auth": {"token": {"expiry": 60}}},
    {"addr": "127.0.0.1:6000", "gc": {"grace": 5}, "webhooks": [{"name": "w", "url": "http://h/", "secret": "s"}]},
    {"log_level": "nope"},
]
KWARGS: list[dict[str, Any]] = [{}, {"data": "/k"}, {"addr": "0.0.0.0:7000", "workers": 3}, {"storage": {"s3": {"bucket": "kw"}}}]


@pytest.mark.parametrize("seed", range(3))
def test_settings_equal_the_librarys_merge(seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyword arguments over environment over the file, deep-merged, then validated."""
    rnd = random.Random(100 + seed)
    envs = HANDMADE + _environments(100 + seed, 120)
    outcomes = set()
    for i, env in enumerate(envs):
        file_data, kwargs = rnd.choice(FILES), rnd.choice(KWARGS)
        cfg = tmp_path / f"c{i}.yml"
        cfg.write_text(yaml.safe_dump(file_data))
        for k in [k for k in os.environ if k.upper().startswith("MOORAGE_")]:
            monkeypatch.delenv(k)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("MOORAGE_CONFIG", str(cfg))
        expected = _outcome(lambda: _reference_settings(env, kwargs, file_data))
        got = _outcome(lambda: settings_from_sources(kwargs, os.environ, file_data))
        assert got == expected, (env, kwargs, file_data)
        outcomes.add(expected[0])
    assert {"ok", "ValidationError", "SettingsError"} <= outcomes


def test_malformed_json_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOORAGE_STORAGE", "{not json")
    with pytest.raises(SettingsError, match='error parsing value for field "storage"'):
        load_settings(None)


def test_precedence_flags_env_file_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text(yaml.safe_dump({"addr": "127.0.0.1:1", "gc": {"grace": 7, "interval": 3}, "storage": {"s3": {"bucket": "f"}}}))
    for k in [k for k in os.environ if k.upper().startswith("MOORAGE_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("MOORAGE_GC__GRACE", "8")
    monkeypatch.setenv("MOORAGE_ADDR", "127.0.0.1:2")
    s = load_settings(cfg, addr="127.0.0.1:3")
    assert (s.addr, s.gc.grace, s.gc.interval, s.storage.s3.bucket, s.storage.s3.region) == (
        "127.0.0.1:3",
        8,
        3,
        "f",
        "us-east-1",
    )
    assert "MOORAGE_CONFIG" not in os.environ  # named to the file source for the call only


def test_no_runtime_module_imports_pydantic_settings() -> None:
    """It is a test dependency only: an import of it in moorage/ would pass here and fail installed."""
    root = Path(__file__).resolve().parents[1] / "moorage"
    users = [str(p.relative_to(root)) for p in root.rglob("*.py") if "pydantic_settings" in p.read_text(encoding="utf-8")]
    assert users == []
    assert len(list(root.rglob("*.py"))) > 50  # the walk sees the package
