"""Every command explains itself: `--help` works and says something, and the README lists it."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from policyengine.cli import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _walk(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
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


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_top_level_command_is_in_the_readme(name):
    assert f"policyengine {name}" in README, f"README.md does not mention `policyengine {name}`"


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("policyengine, version ")
