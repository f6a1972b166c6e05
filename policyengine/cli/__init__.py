"""The ``policyengine`` command: a click group over the library.

Each command lives in a module of this package beside its peers and is a thin
function over a library call; this module only assembles the group.
"""

from __future__ import annotations

import importlib

import click

from .. import __version__

# Modules that export ``COMMANDS``: a list of click commands or groups.
_COMMAND_MODULES = (
    "authoring",  # check, fmt
    "evaluation",  # eval
    "audit",  # audit ..., keys ...
    "reporting",  # report, query, monitor, models
    "replay",  # replay
    "testing",  # test
    "workflows",  # run, runs, approve, reject, demo
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="policyengine")
def main() -> None:
    """Govern AI workflows with policy as code.

    Write rules in .policy files, check and format them, evaluate requests,
    test policies in CI, run governed workflows, and verify the signed audit
    trail. Start with `policyengine demo`, then `policyengine COMMAND --help`.
    """


for _name in _COMMAND_MODULES:
    for _command in importlib.import_module(f"{__name__}.{_name}").COMMANDS:
        main.add_command(_command)
