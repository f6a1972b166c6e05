"""``policyengine schema``: the request schemas of a policy as JSON Schema.

Thin over the library: ``load_policy`` checks and compiles the files, and
``schema.json_schema`` renders the compiled schemas, so callers can validate a
request before they send it (the engine validates it again either way).
"""

from __future__ import annotations

import json
import sys

import click


@click.command("schema")
@click.argument("rules", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--action", default=None, help="Only the attributes checked for this action (no if/then parts).")
def schema_command(rules: tuple[str, ...], action: str | None) -> None:
    """Print the request schema of RULES (files or folders) as JSON Schema (2020-12).

    \b
    Examples:
      policyengine schema rules/ > request.schema.json
      policyengine schema --action approve_payment rules/
    """
    from ..diagnostics import PolicyError, render_findings
    from ..engine import load_policy
    from ..schema import SchemaRule, SchemaSet, json_schema

    try:
        policy = load_policy(list(rules))
    except PolicyError as error:
        click.echo(render_findings(error.findings), err=True)
        sys.exit(1)
    schemas = policy.compiled.schemas
    if action is not None:
        schemas = SchemaSet((SchemaRule(frozenset(), schemas.specs(action)),))
    click.echo(json.dumps(json_schema(schemas), indent=2, ensure_ascii=False))
