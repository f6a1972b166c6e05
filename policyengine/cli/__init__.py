"""The ``policyengine`` command: a click group over the library.

Each command lives in a module of this package beside its peers and is a thin
function over a library call; this module only assembles the group.

Commands are loaded lazily: ``policyengine --help`` and ``policyengine check``
import only click and the one module they run, not DuckDB, rich, cryptography
or the reports. So the group keeps, for each command, the module that defines
it and its one-line help (a test checks the line against the command's own).
"""

from __future__ import annotations

import importlib
import os
from typing import NamedTuple

import click

from .. import __version__


class _Entry(NamedTuple):
    module: str  # module of this package that defines the command
    attr: str  # the click command or group in it
    short_help: str  # shown by `policyengine --help` without importing the module


_COMMANDS: dict[str, _Entry] = {
    "approve": _Entry("workflows", "approve_command", "Approve the pending gate of RUN_ID (the whole run id) and resume the run."),
    "audit": _Entry("audit", "audit_group", "Verify, prove, anchor, tail and export the signed audit trail."),
    "bundle": _Entry("serve", "bundle_group", "Build signed policy bundles for `policyengine serve --bundle`."),
    "check": _Entry("authoring", "check_command", "Parse and statically check policy files."),
    "demo": _Entry("workflows", "demo_command", "Run the five mission workflows on the shipped sample data and rules."),
    "eval": _Entry("evaluation", "eval_command", "Decide requests against rule files; print one JSON decision per line."),
    "fmt": _Entry("authoring", "fmt_command", "Rewrite policy files in the one canonical layout."),
    "gateway": _Entry(
        "gateway", "gateway_command",
        "Serve an OpenAI-compatible LLM gateway; every call is decided by policy, budgeted, screened and audited.",
    ),
    "inbox": _Entry("inbox", "inbox_group",
                    "Approver inbox: a web page to approve or reject waiting runs, and its sign-in tokens."),
    "keys": _Entry("audit", "keys_group", "Create and rotate the Ed25519 keys that sign audit checkpoints and approvals."),
    "models": _Entry("reporting", "models",
                     "Model blocks (`on breach block`) and model and agent versions (promote, rollback)."),
    "monitor": _Entry("reporting", "monitor", "Evaluate every bias and drift rule over the audit log and act on breaches."),
    "query": _Entry("reporting", "query", "Run one read-only SQL statement on the audit database."),
    "reject": _Entry(
        "workflows", "reject_command",
        "Reject the pending gate of RUN_ID (the whole run id): the step is denied and the workflow's fallback runs.",
    ),
    "report": _Entry("reporting", "report", "Run the named report NAME on the audit log, or a bias/drift report."),
    "replay": _Entry("replay", "replay_command",
                     "Re-decide the recorded decision requests of --db under the candidate --rules."),
    "run": _Entry("workflows", "run_command", "Run WORKFLOW once per input item, asking the policy before every step."),
    "runs": _Entry("workflows", "runs_group", "List, inspect and expire workflow runs."),
    "schema": _Entry("schema", "schema_command", "Print the request schema of RULES (files or folders) as JSON Schema (2020-12)."),
    "serve": _Entry(
        "serve", "serve_command",
        "Serve decisions over HTTP (native API and AuthZEN 1.0); every decision is audited before it is answered.",
    ),
    "test": _Entry("testing", "test_command", "Run policy tests (*_test.yaml files) found under PATHS (default: .)."),
}


class _LazyGroup(click.Group):
    """A group whose commands are imported the first time one is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = _COMMANDS.get(cmd_name)
        if entry is None:
            return None
        command = getattr(importlib.import_module(f"{__name__}.{entry.module}"), entry.attr)
        if not isinstance(command, click.Command) or command.name != cmd_name:
            raise RuntimeError(f"policyengine.cli.{entry.module}.{entry.attr} is not the `{cmd_name}` command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name].short_help) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="policyengine")
def main() -> None:
    """Govern AI workflows with policy as code.

    Write rules in .policy files, check and format them, evaluate requests,
    test policies in CI, run governed workflows, and verify the signed audit
    trail. Start with `policyengine demo`, then `policyengine COMMAND --help`.
    """


def commands() -> dict[str, click.Command]:
    """Every top-level command, loaded (for tests and documentation tools)."""
    ctx = click.Context(main)
    loaded = {name: main.get_command(ctx, name) for name in main.list_commands(ctx)}
    return {name: command for name, command in loaded.items() if command is not None}


def registered_short_help(name: str) -> str:
    """The one-line help the group shows for ``name`` without loading it."""
    return _COMMANDS[name].short_help


def state_value(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--state``'s value. An empty one, given or as ``POLICYENGINE_STATE`` set to nothing (a variable meant
    to hold the URL, itself unset), is refused: read as unset, it fell back to state this process alone keeps,
    so budgets and blocks were no longer shared and a budget started again from zero."""
    env = os.environ.get(param.envvar) if isinstance(param.envvar, str) else None
    if (value is not None and not value.strip()) or (value is None and env is not None and not env.strip()):
        click.echo(f"error: --state ({param.envvar}) is empty; give the URL or unset it for the default", err=True)
        ctx.exit(1)
    return value
