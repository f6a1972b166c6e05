"""``report``, ``query``, ``monitor`` and ``models``: reports, ad-hoc SQL, the bias/drift monitor.

Thin over ``policyengine.reporting``: each command parses options, calls one
library function and prints what ``render`` makes of the result. Every
``ReportError`` becomes one ``error:`` line on stderr and exit 1; option misuse is
a usage error (exit 2).
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click
import duckdb

from ..reporting import ReportError
from ..reporting.bias import FOUR_FIFTHS, bias_from_csv
from ..reporting.db import first_line, open_readonly
from ..reporting.drift import drift_from_csv
from ..reporting.query import run_query
from ..reporting.render import FORMATS, render_bias, render_drift, render_rows
from ..reporting.reports import list_reports, parse_param_args, run_named_report
from ..store.files import DEFAULT_DB_PATH, DEFAULT_KEY_PATH
from .clock import clock_override_option, typed_time, writing_now
from . import state_value

DEFAULT_DB = str(DEFAULT_DB_PATH)


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
    """The checked policy set of ``--rules`` (for budget limits, rule kinds, agent owners)."""
    return _policy(rules).policy_set if rules else None


def _policy(rules: tuple[str, ...]) -> Any:
    """The loaded policy of ``--rules``; a broken rule file is one ``error:`` line."""
    from ..diagnostics import PolicyError
    from ..engine import load_policy

    try:
        return load_policy(list(rules))
    except PolicyError as e:
        first = e.findings[0].headline() if e.findings else "invalid rule files"
        _fail(f"--rules: {first}")
    except OSError as e:  # the loader reports unreadable files as findings; this is what gets past it
        where = f"{e.filename}: " if e.filename else ""
        _fail(f"--rules: {where}cannot read rule files ({e.strerror or e})")


def _list() -> str:
    lines = []
    for spec in list_reports():
        params = " ".join(f"[{p.name}={p.default}]" if not p.required else f"{p.name}=VALUE" for p in spec.params)
        lines.append(f"{spec.name:<20} {spec.title}\n{'':<20} params: {params or 'none'}\n{'':<20} serves: {spec.regulation}")
    lines.append(f"{'bias':<20} Offline bias report on a CSV of decisions (--csv --outcome --positive --group)")
    lines.append(f"{'drift':<20} Offline drift report between two CSVs (--reference --current --column)")
    lines.append(f"{'evidence':<20} Evidence for regulators over a period (--since --until; HTML or --format json)")
    return "\n".join(lines) + "\n"


def _when(text: str | None, option: str) -> datetime | None:
    """A report date or ``--now`` (one parser for every command: ``policyengine.clock``)."""
    return typed_time(text, option)


def _from_log(db: str, fmt: str, pubkeys: tuple[str, ...] = ()) -> Any:
    """For an HTML page: the log ``db`` and whether it verified (``None`` for other formats)."""
    from ..reporting.provenance import log_provenance

    return log_provenance(db, pubkeys) if fmt == "html" else None


def _from_files(fmt: str, *paths: str) -> Any:
    from ..reporting.provenance import file_provenance

    return file_provenance(*paths) if fmt == "html" else None


def _need(name: str, pairs: tuple[tuple[str, Any], ...]) -> None:
    missing = [option for option, value in pairs if value in (None, ())]
    if missing:
        raise click.UsageError(f"report {name} needs {', '.join(missing)}")


def _csv_notes(fmt: str, notes: Any, *, also_json: bool = False) -> None:
    """A CSV holds rows only: what the other formats say beside them (calls left out, groups too small to
    judge) goes to stderr, so a CSV reader is not left with numbers whose caveats were dropped."""
    if fmt == "csv" or (also_json and fmt == "json"):
        for note in notes:
            click.echo(f"note: {note}", err=True)


def _bias(o: dict[str, Any]) -> str:
    """Offline (``--csv``) or from the audit log (``--model``)."""
    if o["csv_path"] is None and o["model"] is not None:
        from ..reporting.audit_source import bias_from_audit_db

        _need("bias --model", (("--group", o["group"]), ("--positive", o["positive"])))
        result, source = bias_from_audit_db(
            o["db"], model=o["model"], group=o["group"], positive=o["positive"],
            since=_when(o["since"], "--since"), until=_when(o["until"], "--until"), min_samples=o["min_samples"],
            reference=o["reference"], threshold=o["threshold"])
        _csv_notes(o["fmt"], result.notes)
        return render_bias(result, o["fmt"], source=source, provenance=_from_log(o["db"], o["fmt"], o["pubkeys"]))
    _need("bias", (("--csv (or --model)", o["csv_path"]), ("--outcome", o["outcome"]),
                   ("--positive", o["positive"]), ("--group", o["group"])))
    result = bias_from_csv(o["csv_path"], outcome=o["outcome"], positive=o["positive"], group=o["group"],
                           label=o["label"], label_positive=o["label_positive"], reference=o["reference"],
                           min_samples=o["min_samples"], threshold=o["threshold"])
    _csv_notes(o["fmt"], result.notes)
    return render_bias(result, o["fmt"], source=o["csv_path"], provenance=_from_files(o["fmt"], o["csv_path"]))


def _drift(o: dict[str, Any]) -> str:
    """Offline (``--reference`` and ``--current``) or two windows of the audit log (``--model``)."""
    if o["reference"] is None and o["current"] is None and o["model"] is not None:
        from ..reporting.audit_source import drift_from_audit_db

        _need("drift --model", (("--column", o["columns"]),))
        results, reference, current = drift_from_audit_db(
            o["db"], model=o["model"], paths=o["columns"], until=_when(o["until"], "--until"),
            baseline_days=o["baseline_days"], categorical=o["categorical"], period=o["period"])
        _csv_notes(o["fmt"], [f"{r.column}: {n}" for r in results for n in r.notes])
        return render_drift(results, o["fmt"], reference=reference, current=current,
                            provenance=_from_log(o["db"], o["fmt"], o["pubkeys"]))
    _need("drift", (("--reference (or --model)", o["reference"]), ("--current", o["current"]),
                    ("--column", o["columns"])))
    results = [drift_from_csv(o["reference"], o["current"], c, kind="categorical" if o["categorical"] else "auto")
               for c in o["columns"]]
    _csv_notes(o["fmt"], [f"{r.column}: {n}" for r in results for n in r.notes])
    return render_drift(results, o["fmt"], reference=o["reference"], current=o["current"],
                        provenance=_from_files(o["fmt"], o["reference"], o["current"]))


@click.command("report")
@click.argument("name", required=False)
@click.option("--list", "list_", is_flag=True, help="List the named reports with their parameters and exit.")
@click.option("--db", default=DEFAULT_DB, show_default=True, help="Audit database, or a folder of them read as one (rolled segments, workers), opened read-only.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="A report parameter; repeatable.")
@click.option("--rules", multiple=True, metavar="PATH",
              help="Rule files or folders: lets reports show budget limits, rule kinds and agent owners.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("-o", "--output", metavar="FILE", help="Write the report to FILE instead of stdout.")
@click.option("--csv", "csv_path", metavar="FILE", help="bias: the CSV of decisions, one row per decision.")
@click.option("--model", metavar="MODEL", help="bias/drift: read this model's model_call events from --db.")
@click.option("--outcome", metavar="COL", help="bias: column holding the decision.")
@click.option("--positive", metavar="VALUE", help="bias: the outcome value that counts as selected (favourable).")
@click.option("--group", metavar="COL|PATH",
              help="bias: column (CSV) or payload path such as subject.vendor_region (--model) of the group.")
@click.option("--label", metavar="COL", help="bias: ground-truth column (enables equalized odds).")
@click.option("--label-positive", metavar="VALUE", help="bias: label value that is positive (default: --positive).")
@click.option("--reference", metavar="GROUP|CSV",
              help="bias: the reference group (default: highest selection rate); drift: the reference CSV.")
@click.option("--min-samples", type=click.IntRange(min=0), default=0, show_default=True,
              help="bias: groups with fewer rows are reported, not judged.")
@click.option("--threshold", type=float, default=FOUR_FIFTHS, show_default=True,
              help="bias: impact ratio below which a group is flagged (four-fifths rule).")
@click.option("--current", metavar="CSV", help="drift: the current CSV.")
@click.option("--column", "columns", multiple=True, metavar="COL|PATH",
              help="drift: column (CSV) or payload path such as output.confidence (--model); repeatable.")
@click.option("--categorical", is_flag=True, help="drift: compare the columns as categories even if numeric.")
@click.option("--since", metavar="TIME", help="bias --model: start of the window (default: --until minus 30 days).")
@click.option("--until", metavar="TIME", help="bias/drift --model: end of the window (default: now).")
@click.option("--baseline-days", type=click.IntRange(min=1), default=30, show_default=True,
              help="drift --model: length of the current window and of the baseline before it.")
@click.option("--pubkey", "pubkeys", multiple=True, metavar="PEM",
              help="evidence, HTML reports: trusted public key to verify the log with "
                   "(default: ./policyengine.key.pub.pem).")
@click.option("--period", type=click.Choice(("hour", "day", "week", "month")), default="day", show_default=True,
              help="drift --model: PSI over time per period.")
def report(name: str | None, list_: bool, db: str, params: tuple[str, ...], rules: tuple[str, ...], fmt: str,
           output: str | None, **options: Any) -> None:
    """Run the named report NAME on the audit log, or a bias/drift report.

    \b
    policyengine report --list
    policyengine report denials --db audit.duckdb --param since=2026-11-01 --format csv
    policyengine report bias --csv decisions.csv --outcome decision --positive approved --group region
    policyengine report bias --db audit.duckdb --model classifier_small --group subject.vendor_region --positive auto_resolved
    policyengine report drift --reference jan.csv --current feb.csv --column amount --format html -o drift.html
    policyengine report drift --db audit.duckdb --model classifier_small --column output.confidence --period week
    policyengine report evidence --db audit.duckdb --since 2026-10-01 --until 2027-01-01 -o evidence.html
    """
    if list_:
        if fmt == "json":
            import json

            specs = [{"name": r.name, "title": r.title, "description": r.description, "regulation": r.regulation,
                      "params": [{"name": p.name, "type": p.type, "default": p.default, "required": p.required,
                                  "description": p.description, "choices": list(p.choices)} for p in r.params]}
                     for r in list_reports()]
            click.echo(json.dumps(specs, indent=2))
        else:
            click.echo(_list(), nl=False)
        return
    if name is None:
        raise click.UsageError("give a report NAME or --list (see `policyengine report --list`)")
    options.update(db=db, fmt=fmt)
    try:
        if name == "bias":
            text = _bias(options)
        elif name == "drift":
            text = _drift(options)
        elif name == "evidence":
            from ..reporting.evidence import evidence, render_evidence

            text = render_evidence(evidence(db, since=_when(options["since"], "--since"),
                                            until=_when(options["until"], "--until"), pubkeys=options["pubkeys"]),
                                   "html" if fmt == "table" else fmt)
        else:
            given = [f"--{k}" for k in ("since", "until") if options[k]]
            if given:  # ignored, they showed every row while the reader took the report for that period
                _fail(f"report {name}: {' and '.join(given)}: only bias, drift and evidence take these options; a named "
                      f"report takes its period as --param since=TIME --param until=TIME (see `policyengine report --list`)")
            result = run_named_report(db, name, parse_param_args(params), policy_set=_policy_set(rules))
            _csv_notes(fmt, result.notes, also_json=True)  # a JSON list of rows has no place for them either
            text = render_rows(result, fmt, _from_log(db, fmt, options["pubkeys"]))  # type: ignore[arg-type]
    except ReportError as e:
        _fail(str(e))
    except OverflowError:  # a window reaching past year 1 or 9999 from a date at the calendar's edge
        typed = ", ".join(f"--{k} {v}" for k, v in options.items() if k in ("since", "until") and v) or "the dates"
        _fail(f"report {name}: {typed}: the window reaches beyond the calendar (years 0001 to 9999); "
              f"choose dates further from its ends")
    except duckdb.Error as e:  # anything the library did not foresee is still one line
        _fail(f"report {name}: {first_line(e)}")
    _emit(text, output)


class _QueryCommand(click.Command):
    """``query`` whose SQL may begin with ``-`` (a ``-- comment`` line): it is the SQL, not an option.

    An argument that starts with ``-`` and holds whitespace cannot be an option name,
    so it is moved behind ``--`` (end of options) before click parses the rest;
    ``policyengine query -- "SQL"`` works as well.
    """

    _VALUED = frozenset({"--db", "--format", "-o", "--output", "--timeout", "--memory-limit", "--max-rows"})

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args = list(args)
        for i, arg in enumerate(args):
            if arg == "--":
                break
            if (arg.startswith("-") and any(c.isspace() for c in arg)
                    and (i == 0 or args[i - 1] not in self._VALUED)):
                args = [*args[:i], *args[i + 1:], "--", arg]
                break
        return super().parse_args(ctx, args)


@click.command("query", cls=_QueryCommand)
@click.argument("sql")
@click.option("--db", default=DEFAULT_DB, show_default=True, help="Audit database, or a folder of them read as one (rolled segments, workers), opened read-only.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("-o", "--output", metavar="FILE", help="Write the result to FILE instead of stdout.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=60, show_default=True,
              metavar="SECONDS", help="Stop the statement after this many seconds.")
@click.option("--memory-limit", default="1GB", show_default=True, metavar="SIZE",
              help="DuckDB memory limit for the statement (e.g. 512MB, 2GB).")
@click.option("--max-rows", type=click.IntRange(min=1), default=1_000_000, show_default=True,
              help="Refuse results with more rows than this (add a LIMIT).")
def query(sql: str, db: str, fmt: str, output: str | None, timeout_s: float, memory_limit: str,
          max_rows: int) -> None:
    """Run one read-only SQL statement on the audit database.

    Read statements are SELECT, WITH ... SELECT, FROM, VALUES, PIVOT, UNPIVOT,
    DESCRIBE, SUMMARIZE, SHOW and EXPLAIN; statements that write (INSERT, UPDATE,
    DELETE, CREATE, COPY, ATTACH, ...) are refused, also inside EXPLAIN ANALYZE;
    reading other files from SQL is switched off. Each statement runs under
    --timeout, --memory-limit and --max-rows. SQL may start with a `-- comment` line.

    \b
    policyengine query "SELECT event, count(*) FROM audit_log GROUP BY ALL" --db audit.duckdb
    policyengine query "PIVOT audit_log ON event USING count(*)"
    """
    try:
        result = run_query(db, sql, timeout_s=timeout_s, memory_limit=memory_limit, max_rows=max_rows)
        _emit(render_rows(result, fmt, _from_log(db, fmt)), output)  # type: ignore[arg-type]
    except ReportError as e:
        _fail(str(e))
    except duckdb.Error as e:
        _fail(f"query: {first_line(e)}")


# --- monitor and the model block list -----------------------------------------------------------


def _monitor_rows(results: Any) -> Any:
    from ..reporting.reports import ReportResult, ReportSpec

    cols = ("kind", "rule", "model", "metric", "value", "threshold", "breach", "action", "note")
    rows = tuple(
        (r.kind, r.rule, r.model, r.metric, r.value, r.threshold, r.breach,
         (f"escalate to {r.escalate_to}" if r.action == "escalate" else r.action),
         r.error or "; ".join(r.details.get("notes", [])[:2]))
        for r in results
    )
    spec = ReportSpec("monitor", "", "Bias and drift monitor",
                      "Every bias and drift rule evaluated over its window of the audit log.", "", (), "")
    return ReportResult(spec, {}, cols, rows)


DEFAULT_KEY = str(DEFAULT_KEY_PATH)


def _default_rules(rules: tuple[str, ...]) -> tuple[str, ...]:
    """``--rules`` as given, else the shipped ``rules/`` folder (as ``run`` and ``approve``)."""
    if rules:
        return rules
    from ..resources import data_path

    try:
        return (str(data_path("rules")),)
    except FileNotFoundError as e:
        _fail(f"--rules: {e}; pass --rules PATH")


def _signing_key(key: str | None, purpose: str) -> str:
    """The key file to sign with: ``--key``, else ./policyengine.key; one line if it is missing."""
    path = Path(key or DEFAULT_KEY)
    if path.is_file():
        return str(path)
    if path.is_dir():
        _fail(f"{path}: is a directory, not a signing key file (--key)")
    hint = "pass --key KEYFILE" if key is None else "check --key"
    _fail(f"{path}: signing key not found; {hint} (made by `policyengine demo` or `policyengine run`){purpose}")


@click.command("monitor")
@click.option("--db", default=DEFAULT_DB, show_default=True, help="Audit database.")
@click.option("--rules", multiple=True, metavar="PATH",
              help="Rule files or folders; repeatable (default: the shipped rules/).")
@click.option("--key", metavar="KEYFILE",
              help=f"Signing key for the audit alert events (default: ./{DEFAULT_KEY}).")
@click.option("--record/--no-record", default=True, show_default=True,
              help="Record results as signed alert events and apply `on breach` (--no-record: only print).")
@click.option("--now", "now_text", metavar="TIME",
              help="Evaluate as of this UTC time (ISO 8601; default: now); when recording only together with "
                   "--clock-override (test-only, recorded).")
@clock_override_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--fail-on-breach", is_flag=True,
              help="Exit 1 when any rule breaches or could not be evaluated (for CI and cron).")
@click.option("--state", metavar="URL", envvar="POLICYENGINE_STATE", callback=state_value,
              help="postgresql://...: the block list shared by every worker (default: model_blocks in --db). "
                   "Env: POLICYENGINE_STATE.")
def monitor(db: str, rules: tuple[str, ...], key: str | None, record: bool, now_text: str | None,
            clock_override: bool, fmt: str, fail_on_breach: bool, state: str | None) -> None:
    """Evaluate every bias and drift rule over the audit log and act on breaches.

    Each result is signed into the audit log as an `alert` event (key: --key,
    default ./policyengine.key). On a breach, `on breach block` suspends the model
    until `policyengine models unblock MODEL`; `escalate to role R` leaves an open
    item for role R in `policyengine report open_escalations`. --no-record only
    prints: nothing is written, nothing is blocked.
    """
    from ..reporting.monitor import run_monitor

    now = writing_now(now_text, clock_override, "monitor") if record else _when(now_text, "--now")
    try:  # the database first: a missing key is no news if there is nothing to read
        open_readonly(db).close()
    except ReportError as e:
        _fail(str(e))
    policy = _policy(_default_rules(rules))
    key_path = _signing_key(key, ", or --no-record to only print the results") if record else None
    try:
        results, blocked = run_monitor(db, policy, key=key_path, now=now, record_results=record,
                                       clock_override=now is not None, state=state)
    except ReportError as e:
        _fail(str(e))
    except duckdb.Error as e:
        _fail(f"monitor: {first_line(e)}")
    _emit(render_rows(_monitor_rows(results), fmt, _from_log(db, fmt)), None)  # type: ignore[arg-type]
    for model in blocked:
        click.echo(f"blocked: {model} (until `policyengine models unblock {model}`)", err=True)
    if record:
        for r in results:
            if r.breach and r.action == "escalate":
                click.echo(f"escalated: {r.rule} ({r.model}) to role {r.escalate_to}; "
                           "open items: `policyengine report open_escalations`", err=True)
    elif results:
        click.echo("note: --no-record: results not recorded in the audit log and no model blocked", err=True)
    unread = [r for r in results if not r.evaluated]
    for r in unread:  # no reading is no sign of health: said, and a failure for --fail-on-breach
        click.echo(f"not evaluated: {r.rule} ({r.model}): {r.error}", err=True)
    if fail_on_breach and (unread or any(r.breach for r in results)):
        sys.exit(1)


@click.group("models")
def models() -> None:
    """Model blocks (`on breach block`) and model and agent versions (promote, rollback)."""


@models.command("blocked")
@click.option("--db", default=DEFAULT_DB, show_default=True, help="Audit database.")
@click.option("--state", metavar="URL", envvar="POLICYENGINE_STATE", callback=state_value,
              help="postgresql://...: the block list shared by every worker (default: model_blocks in --db). "
                   "Env: POLICYENGINE_STATE.")
def models_blocked(db: str, state: str | None) -> None:
    """List the models currently blocked, with the rule that blocked them."""
    from ..reporting.monitor import active_blocks

    try:
        rows = active_blocks(db, state)
    except ReportError as e:
        _fail(str(e))
    for model, rule, reason, at in rows:
        click.echo(f"{model}\tblocked by {rule} at {at:%Y-%m-%d %H:%M} UTC: {reason}")
    if not rows:
        click.echo("no model is blocked")


@models.command("unblock")
@click.argument("model")
@click.option("--db", default=DEFAULT_DB, show_default=True, help="Audit database.")
@click.option("--by", "by", envvar="USER", default="unknown", show_default="$USER", help="Who lifts the block.")
@click.option("--note", help="Why the block is lifted (kept in model_blocks and the audit event).")
@click.option("--key", metavar="KEYFILE",
              help=f"Signing key of the audit log that records the lift (default: ./{DEFAULT_KEY}).")
@click.option("--state", metavar="URL", envvar="POLICYENGINE_STATE", callback=state_value,
              help="postgresql://...: the block list shared by every worker (default: model_blocks in --db). "
                   "Env: POLICYENGINE_STATE.")
def models_unblock(model: str, db: str, by: str, note: str | None, key: str | None, state: str | None) -> None:
    """Lift the block on MODEL so that the engine allows it again.

    The lift is first signed into the audit log as a `model_unblocked` event
    (key: --key, default ./policyengine.key), then kept in `model_blocks` (who,
    when, why). Without a signing key nothing is lifted: a lift the audit log
    does not show is not allowed.
    """
    from ..reporting.monitor import unblock

    try:  # the database first: what is wrong with it says more than a missing key
        open_readonly(db).close()
    except ReportError as e:
        _fail(str(e))
    key_path = _signing_key(key, "; a lift is signed into the audit log before it takes effect, so nothing was lifted")
    try:
        unblock(db, model, by=by, note=note, key=key_path, state=state)
    except ReportError as e:
        _fail(str(e))
    click.echo(f"unblocked: {model}")




from .model_versions import COMMANDS as _VERSION_COMMANDS  # noqa: E402 - they use this module's helpers

for _command in _VERSION_COMMANDS:
    models.add_command(_command)
