"""Every command explains itself: `--help` works and says something, and the README lists it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from policyengine.cli import commands, main, registered_short_help

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _walk(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in sorted(commands().items() if group is main else group.commands.items()):
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _walk(command, (*prefix, name))


COMMANDS = list(_walk(main))


def test_the_cli_has_commands():
    assert COMMANDS, "no command is registered on the policyengine group"


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help(path, command):
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="policyengine")
    assert result.exit_code == 0, result.output
    assert command.help and command.help.strip(), f"`policyengine {' '.join(path)}` has no help text"
    assert "Usage: policyengine " + " ".join(path) in result.output


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_top_level_command_is_in_the_readme(name):
    assert f"policyengine {name}" in README, f"README.md does not mention `policyengine {name}`"


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("policyengine, version ")


@pytest.mark.parametrize("name", sorted(commands()))
def test_the_group_shows_each_command_s_own_short_help(name):
    """`policyengine --help` lists commands without importing them, from a copy of their help."""
    assert registered_short_help(name) == commands()[name].get_short_help_str(limit=150)


def test_top_level_help_imports_no_command_module():
    code = (
        "import sys; from click.testing import CliRunner; from policyengine.cli import main; "
        "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in sys.modules if m.startswith('policyengine.cli.') or m in ('duckdb', 'rich', 'yaml', 'lark')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_check_does_not_import_duckdb_or_rich(tmp_path):
    policy = tmp_path / "a.policy"
    policy.write_text("package a\n\nrole analyst\n", encoding="utf-8")
    code = (
        "import sys; from click.testing import CliRunner; from policyengine.cli import main; "
        f"r = CliRunner().invoke(main, ['check', {str(policy)!r}]); "
        "print(r.exit_code, sorted(m for m in ('duckdb', 'rich', 'cryptography', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0 []", out
