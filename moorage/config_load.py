"""Loading the settings: which sources, in which order, and what is refused.

:class:`moorage.config.Settings` is a plain model; this module is the one loader.  Sources, the
strongest first: command-line flags, ``MOORAGE_*`` variables, the config file (Moorage's YAML or
a registry:2 ``config.yml``, translated by :mod:`moorage.config_distribution`), defaults.
Unknown variables and keys are refused with the closest valid name before anything is built.
It sits above both ``config`` and ``compat`` (neither imports the other).
"""

from __future__ import annotations

import os
import typing
from typing import Any

from .config import (
    ENV_PREFIX,
    NOT_SETTINGS,
    NOT_SETTINGS_PREFIX,
    Settings,
    UnknownSettingError,
    _check_mapping,
    _env_names,
    _suggest,
)
from .config_env import EnvReader, merge_sources


def check_unknown_keys(environ: typing.Mapping[str, str], file_data: dict[str, Any] | None, path: str | None) -> None:
    """Refuse ``MOORAGE_*`` variables and config-file keys (``file_data``, read from ``path``)
    that name no setting, with a suggestion."""
    valid = _env_names(Settings, "MOORAGE_")
    known = set(valid)
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith("MOORAGE_") or upper in known or upper in NOT_SETTINGS:
            continue
        if upper.startswith(NOT_SETTINGS_PREFIX):
            continue
        raise UnknownSettingError(f"unknown environment variable {name}{_suggest(upper, valid)}")
    if file_data is not None and path:
        _check_mapping(file_data, Settings, "", path)


def _read_yaml(path: str, environ: typing.Mapping[str, str] | None = None) -> dict[str, Any]:
    import yaml  # only with a config file (most containers configure through MOORAGE_* alone)

    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the config file must hold a mapping")
    from .config_distribution import is_distribution_config
    from .config_distribution import load as load_distribution

    if is_distribution_config(data):  # a registry:2 config.yml (+ REGISTRY_* overrides)
        return load_distribution(data, os.environ if environ is None else environ)
    return data


def settings_from_sources(
    flags: dict[str, Any], environ: typing.Mapping[str, str], file_data: dict[str, Any] | None = None
) -> Settings:
    """The settings of three explicit sources: ``flags`` over the ``MOORAGE_*`` variables of
    ``environ`` over ``file_data`` (a config file's mapping), deep-merged, then validated."""
    env = EnvReader(environ, ENV_PREFIX).values(Settings)
    return Settings(**merge_sources(flags, env, file_data or {}))


def load_settings(
    config: str | os.PathLike[str] | None = None, *, environ: typing.Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """The one loader: ``overrides`` (CLI flags, ``None`` = not given) over the environment over
    the config file (``config``, else ``MOORAGE_CONFIG``), after refusing unknown keys in both."""
    environ = os.environ if environ is None else environ
    clean = {k: v for k, v in overrides.items() if v is not None}
    path = str(config) if config is not None else environ.get("MOORAGE_CONFIG")
    file_data = _read_yaml(path, environ) if path else None  # read once: checked, then merged
    check_unknown_keys(environ, file_data, path)
    return settings_from_sources(clean, environ, file_data)
