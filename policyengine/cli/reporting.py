"""``policyengine report`` and ``policyengine query``: reports for auditors.

Thin over ``policyengine.reporting``: each command parses options, calls one
library function and prints what ``render`` makes of the result. Every
``ReportError`` becomes one ``error:`` line on stderr and exit 1; option misuse is
a usage error (exit 2).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from ..reporting import ReportError
from ..reporting.bias import FOUR_FIFTHS, bias_from_csv
from ..reporting.drift import drift_from_csv
from ..reporting.query import run_query
from ..reporting.render import FORMATS, render_bias, render_drift, render_rows
from ..reporting.reports import list_reports, parse_param_args, run_named_report

DEFAULT_DB = "policyengine.duckdb"
_OFFLINE = ("bias", "drift")


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _emit(text: str, output: str | None) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as e:
        _fail(f"{output}: cannot write report ({e.strerror or e})")
    click.echo(f"wrote {output}", err=True)


def _policy_set(rules: tuple[str, ...]) -> Any:
    """The checked policy of ``--rules`` (for budget limits, rule kinds, agent owners)."""
    if not rules:
        return None
    from ..diagnostics import PolicyError
    from ..engine import load_policy

    try:
        return load_policy(list(rules)).policy_set
    except PolicyError as e:
        first = e.findings[0].headline() if e.findings else "invalid rule files"
        _fail(f"--rules: {first}")
    except Exception as e:  # noqa: BLE001 - the loader is another area's; never show a traceback
        _fail(f"--rules: cannot load rule files ({type(e).__name__}: {e})")


def _list() -> str:
    lines = []
    for spec in list_reports():
        params = " ".join(f"[{p.name}={p.default}]" if not p.required else f"{p.name}=VALUE" for p in spec.params)
        lines.append(f"{spec.name:<20} {spec.title}\n{'':<20} params: {params or 'none'}\n{'':<20} serves: {spec.regulation}")
    lines.append(f"{'bias':<20} Offline bias report on a CSV of decisions (--csv --outcome --positive --group)")
    lines.append(f"{'drift':<20} Offline drift report between two CSVs (--reference --current --column)")
    return "\n".join(lines) + "\n"


@click.command("report")
@click.argument("name", required=False)
@click.option("--list", "list_", is_flag=True, help="List the named reports with their parameters and exit.")
@click.option("--db", default=DEFAULT_DB, show_default=True, help="Audit database (opened read-only).")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="A report parameter; repeatable.")
@click.option("--rules", multiple=True, metavar="PATH",
              help="Rule files or folders: lets reports show budget limits, rule kinds and agent owners.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("-o", "--output", metavar="FILE", help="Write the report to FILE instead of stdout.")
@click.option("--csv", "csv_path", metavar="FILE", help="bias: the CSV of decisions, one row per decision.")
@click.option("--outcome", metavar="COL", help="bias: column holding the decision.")
@click.option("--positive", metavar="VALUE", help="bias: the outcome value that counts as selected (favourable).")
@click.option("--group", metavar="COL", help="bias: column holding the protected group.")
@click.option("--label", metavar="COL", help="bias: ground-truth column (enables equalized odds).")
@click.option("--label-positive", metavar="VALUE", help="bias: label value that is positive (default: --positive).")
@click.option("--reference", metavar="GROUP|CSV",
              help="bias: the reference group (default: highest selection rate); drift: the reference CSV.")
@click.option("--min-samples", type=int, default=0, show_default=True,
              help="bias: groups with fewer rows are reported, not judged.")
@click.option("--threshold", type=float, default=FOUR_FIFTHS, show_default=True,
              help="bias: impact ratio below which a group is flagged (four-fifths rule).")
@click.option("--current", metavar="CSV", help="drift: the current CSV.")
@click.option("--column", "columns", multiple=True, metavar="COL", help="drift: column to compare; repeatable.")
@click.option("--categorical", is_flag=True, help="drift: compare the columns as categories even if numeric.")
def report(name: str | None, list_: bool, db: str, params: tuple[str, ...], rules: tuple[str, ...], fmt: str,
           output: str | None, csv_path: str | None, outcome: str | None, positive: str | None,
           group: str | None, label: str | None, label_positive: str | None, reference: str | None,
           min_samples: int, threshold: float, current: str | None, columns: tuple[str, ...],
           categorical: bool) -> None:
    """Run the named report NAME on the audit log, or an offline bias/drift report.

    \b
    policyengine report --list
    policyengine report denials --db audit.duckdb --param since=2026-11-01 --format csv
    policyengine report bias --csv decisions.csv --outcome decision --positive approved --group region
    policyengine report drift --reference jan.csv --current feb.csv --column amount --format html -o drift.html
    """
    if list_:
        click.echo(_list(), nl=False)
        return
    if name is None:
        raise click.UsageError("give a report NAME or --list (see `policyengine report --list`)")
    try:
        if name == "bias":
            missing = [o for o, v in (("--csv", csv_path), ("--outcome", outcome), ("--positive", positive),
                                      ("--group", group)) if v is None]
            if missing:
                raise click.UsageError(f"report bias needs {', '.join(missing)}")
            result = bias_from_csv(csv_path, outcome=outcome, positive=positive, group=group, label=label,  # type: ignore[arg-type]
                                   label_positive=label_positive, reference=reference,
                                   min_samples=min_samples, threshold=threshold)
            _emit(render_bias(result, fmt, source=csv_path or ""), output)  # type: ignore[arg-type]
        elif name == "drift":
            missing = [o for o, v in (("--reference", reference), ("--current", current), ("--column", columns or None))
                       if v is None]
            if missing:
                raise click.UsageError(f"report drift needs {', '.join(missing)}")
            kind = "categorical" if categorical else "auto"
            results = [drift_from_csv(reference, current, c, kind=kind) for c in columns]  # type: ignore[arg-type]
            _emit(render_drift(results, fmt, reference=reference or "", current=current or ""), output)  # type: ignore[arg-type]
        else:
            result = run_named_report(db, name, parse_param_args(params), policy_set=_policy_set(rules))
            _emit(render_rows(result, fmt), output)  # type: ignore[arg-type]
    except ReportError as e:
        _fail(str(e))


@click.command("query")
@click.argument("sql")
@click.option("--db", default=DEFAULT_DB, show_default=True, help="Audit database (opened read-only).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("-o", "--output", metavar="FILE", help="Write the result to FILE instead of stdout.")
def query(sql: str, db: str, fmt: str, output: str | None) -> None:
    """Run one read-only SQL statement on the audit database.

    Statements that write (INSERT, UPDATE, DELETE, CREATE, COPY, ATTACH, ...) are
    refused; reading other files from SQL is switched off.

    \b
    policyengine query "SELECT event, count(*) FROM audit_log GROUP BY ALL" --db audit.duckdb
    """
    try:
        _emit(render_rows(run_query(db, sql), fmt), output)  # type: ignore[arg-type]
    except ReportError as e:
        _fail(str(e))


COMMANDS: list = [report, query]
