"""The command line: plugin commands load on demand (``moorage --help`` imports none of them),
and the table that names them stays equal to the commands the packages define."""

from __future__ import annotations

import importlib
import subprocess
import sys

from moorage.cli import PLUGIN_COMMANDS, main


def test_plugin_table_matches_the_packages_commands() -> None:
    seen: dict[str, tuple[str, str]] = {}
    for module in sorted({m for m, _ in PLUGIN_COMMANDS.values()}):
        for cmd in importlib.import_module(module).commands:
            seen[cmd.name] = (module, cmd.get_short_help_str(80))
    assert seen == PLUGIN_COMMANDS


def test_help_imports_no_plugin_and_lists_every_command() -> None:
    code = (
        "import sys; sys.argv=['moorage','--help']\nfrom moorage.cli import main\ntry: main()\n"
        "except SystemExit: pass\nprint('LOADED', sorted(m for m in sys.modules if m.startswith("
        "('moorage.auth', 'moorage.gc', 'moorage.events', 'moorage.config', 'aiohttp', 'sqlalchemy', 'asyncio'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip().endswith("LOADED []"), out[-400:]
    for name in list(PLUGIN_COMMANDS) + ["serve", "migrate"]:
        assert f"  {name} " in out or f"  {name}\n" in out, name


def test_a_plugin_command_runs_through_the_lazy_group() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["vulndb", "--help"])
    assert result.exit_code == 0 and "import" in result.output and "status" in result.output
    result = CliRunner().invoke(main, ["no-such-command"])
    assert result.exit_code == 2 and "No such command" in result.output


def test_account_commands_warn_when_the_auth_mode_ignores_accounts(tmp_path) -> None:  # noqa: ANN001
    """With ``auth.mode: none`` a user, grant or token changes nothing: ``user add``, ``grant``
    and ``token create`` say so on one stderr line (and still succeed, exit 0); in token mode
    they say nothing of the kind."""
    import os

    from click.testing import CliRunner

    data = tmp_path / "data"
    data.mkdir()
    clean = {k: None for k in os.environ if k.startswith("MOORAGE_")}

    def run(*args: str, mode: str, input: str | None = None) -> tuple[int, str, str]:
        env = {**clean, "MOORAGE_AUTH__MODE": mode, "MOORAGE_AUTH__BCRYPT_ROUNDS": "4"}
        result = CliRunner(env=env).invoke(main, [*args, "--data", str(data)], input=input, catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    assert run("migrate", mode="none")[0] == 0
    commands = [
        (("user", "add", "bob", "--password-stdin"), "pw-12345678\n"),
        (("grant", "bob", "team/*", "pull"), None),
        (("token", "create", "bob"), None),
    ]
    for args, stdin in commands:
        code, out, err = run(*args, mode="none", input=stdin)
        warnings = [line for line in err.splitlines() if line.startswith("warning:")]
        assert code == 0 and len(warnings) == 1, (args, code, err)
        assert "no effect" in warnings[0] and "auth.mode: token" in warnings[0]
        assert "warning" not in out
    for args, stdin in [(("user", "add", "carol", "--password-stdin"), "pw-12345678\n"), *commands[1:]]:
        code, _, err = run(*args, mode="token", input=stdin)
        assert code == 0 and "warning" not in err, (args, code, err)
