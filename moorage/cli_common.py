"""What every ``moorage`` command shares: the ``--config``/``--data`` options and settings
loading with one-line errors.  Separate from :mod:`moorage.cli` so the packages' command
modules can use it while the main group imports them (no import cycle)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from .components import Components, PolicyFactory
    from .config import Settings


@dataclass(frozen=True)
class CommandContext:
    """What the main ``moorage`` group hands every feature's commands, as click's context object.

    A feature's command that opens the registry (``moorage gc``, ``moorage scan``) must build the
    components as the server does -- with the policies the composition root chooses (immutable
    tags, quotas) -- but a feature's package sits below the composition root and may not import
    it. The root passes what it would build through this object instead (set in
    :func:`moorage.cli.main`)."""

    #: ``(settings, pool_size=...) -> Components`` with the composition root's policies.
    components_for: Callable[..., Components]
    #: The policy hooks the core consults (for :func:`moorage.components.opened`).
    policies: PolicyFactory


def command_context() -> CommandContext:
    """The :class:`CommandContext` of the running command; a command run outside the ``moorage``
    group (nothing does) gets a one-line error, not a registry opened without its policies."""
    ctx = click.get_current_context(silent=True)
    found = ctx.find_object(CommandContext) if ctx is not None else None
    if found is None:
        raise click.ClickException("internal error: this command must run under `moorage`")
    return found


_COMMON = [
    click.option("--config", "config", type=click.Path(dir_okay=False), help="YAML config file (MOORAGE_CONFIG)."),
    click.option("--data", "data", type=click.Path(file_okay=False), help="Data directory (MOORAGE_DATA, default ./data)."),
]


def data_options(fn: Any) -> Any:
    """``--config``/``--data``: accepted by every command that touches the registry's data."""
    for opt in reversed(_COMMON):
        fn = opt(fn)
    return fn


def _one_line(exc: Exception) -> str:
    """A configuration error as one line (pydantic's own message spans several)."""
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover
        ValidationError = ()  # type: ignore[assignment,misc]  # noqa: N806
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()))
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            if err.get("type") == "extra_forbidden":
                msg = "unknown key"
            parts.append(f"{loc}: {msg}" if loc else msg)
        return "; ".join(parts)
    return " ".join(str(exc).split())


def settings_from(
    config: str | None, data: str | None, *, require_registry: bool = True, prepare_data: bool = True, **more: Any
) -> Settings:
    """Settings for a command; ``require_registry`` (all but ``serve``/``migrate``) refuses a data
    directory or database that holds no registry, so a typo in --data creates nothing.

    Started as root with ``MOORAGE_RUN_AS`` (the container image), the command gives that user
    Moorage's own files in the data directory (unless ``prepare_data`` is false, or the data
    directory does not exist yet and ``require_registry`` holds), then drops root before anything
    else is read or written (:mod:`moorage.privileges`)."""
    from .config_load import load_settings  # (pydantic models: imported when a command runs, not for --help)

    try:
        settings = load_settings(config, data=data, **more)
    except Exception as exc:  # pydantic / YAML errors: say what is wrong, no traceback
        raise click.ClickException(f"invalid configuration: {_one_line(exc)}") from None
    from .privileges import ENV, PrivilegeError, drop_root

    try:
        drop_root(settings, prepare_data=prepare_data and (not require_registry or settings.data.is_dir()))
    except (PrivilegeError, OSError) as exc:
        raise click.ClickException(f"cannot drop root to {ENV}: {exc}") from None
    if require_registry:
        from .startup import StartupError, registry_missing

        try:
            missing = registry_missing(settings)
        except StartupError as exc:
            raise click.ClickException(str(exc)) from None
        if missing:
            raise click.ClickException(missing)
    return settings


def cli_principal() -> Any:
    """Whoever runs a ``moorage`` command, as the caller of a service operation: face ``cli``,
    actor ``cli:<OS user>``, an administrator (the data directory's permissions already gave
    them everything)."""
    import getpass

    from .registry.principal import Principal

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry (containers)
        user = "unknown"
    return Principal(f"cli:{user}", "cli", admin=True, address="local", user_agent="moorage-cli")
