"""``run``, ``runs list|show|expire``, ``approve``, ``reject`` and ``demo``: governed workflows.

Each command opens the database, works and closes it (see
``policyengine.orchestrator.session``); the logic lives in the orchestrator.
Results go to stdout; progress and notices go to stderr.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..store.files import DEFAULT_DB_PATH, DEFAULT_KEY_PATH
from .clock import clock_override_option, typed_time, writing_now
from . import state_value

_DB_HELP = "DuckDB database holding runs, budgets and the audit log."


def _console(stderr: bool = False) -> Console:
    """A console that does not squeeze tables to 80 columns when output is piped."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160, soft_wrap=True)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _now(value: str | None) -> datetime | None:
    """``--now`` of a read-only command (an "as of" view)."""
    return typed_time(value, "--now")


_mask_option = click.option(
    "--mask", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Masking config YAML: audit payload fields to drop or hash (default: policyengine.mask.yaml beside "
         "the database, if present).")


def _remember_state(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    ctx.meta["policyengine.state"] = state_value(ctx, param, value)


_state_option = click.option(
    "--state", metavar="URL", envvar="POLICYENGINE_STATE", expose_value=False, callback=_remember_state,
    help="Shared state for several workers: postgresql://... holds the budget ledger, runs and approvals (the "
         "audit log stays in --db, one per worker). Default: everything in --db. Env: POLICYENGINE_STATE.")


def session_options(create_key: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options every workflow command shares: where the database, key, rules and users are."""

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        opts = [
            click.option("--db", type=click.Path(dir_okay=False, path_type=Path),
                         default=DEFAULT_DB_PATH, show_default=True, help=_DB_HELP),
            click.option("--key", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_KEY_PATH,
                         show_default=True, help="Ed25519 signing key of the audit log"
                         + (" (created if missing)." if create_key else ".")),
            click.option("--rules", "rules", multiple=True, type=click.Path(exists=True, path_type=Path),
                         help="Rule files or folders (repeatable; default: the shipped rules/)."),
            click.option("--directory", type=click.Path(dir_okay=False, path_type=Path), hidden=True,
                         help="Refused: the user directory is the deployment's (policyengine.directory.yaml "
                              "beside the database, else the shipped one)."),
            click.option("--providers", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                         help="Model provider configuration YAML (default: the local simulator)."),
            _mask_option,
            _state_option,
        ]
        for opt in reversed(opts):
            f = opt(f)
        return f

    return wrap


def _session(db: Path, key: Path, rules: tuple[Path, ...], directory: Path | None, providers: Path | None,
             mask: Path | None, *, create_key: bool = False, now: datetime | None = None,
             command: str = "session") -> Any:
    from ..orchestrator.session import Session, SessionConfig, default_rules
    from ..store.files import DIRECTORY_NAME, StoreError, beside_database

    if directory is not None:
        try:
            where = f" ({beside_database(db, DIRECTORY_NAME)})"
        except StoreError:
            where = ""  # the session refuses that database itself, saying why
        _fail(f"--directory {directory}: the user directory is the deployment's, not the caller's; put it in "
              f"{DIRECTORY_NAME} beside the database{where}; changes are audited")
    ctx = click.get_current_context(silent=True)
    state = ctx.meta.get("policyengine.state") if ctx is not None else None
    return Session(SessionConfig(db=db, key=key, rules=list(rules) or default_rules(), providers=providers,
                                 create_key=create_key, now=now, mask=mask, command=command, state=state))


def _errors() -> tuple[type[BaseException], ...]:
    import duckdb

    from ..identity import IdentityError
    from ..orchestrator.approvals import ApprovalRefused
    from ..orchestrator.runner import RecordError, RunError
    from ..orchestrator.session import SessionError
    from ..store import StoreError

    return (SessionError, RunError, ApprovalRefused, RecordError, IdentityError, StoreError, duckdb.Error)


# --- run / demo ---------------------------------------------------------------------


def _run_batch(orch: Any, workflow: str, items: list[dict[str, Any]], requested_by: str, console: Console, *,
               again: str | None = None, fresh: bool = False) -> Any:
    from ..orchestrator.summary import BatchSummary

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=len(items) < 2 or not console.is_terminal) as bar:
        task = bar.add_task(workflow, total=len(items))
        results = orch.run_batch(workflow, items, requested_by=requested_by, again=again, fresh=fresh,
                                 on_result=lambda r: bar.advance(task))
    return BatchSummary.of(workflow, results), results


def _earlier_notes(console: Console, results: list[Any]) -> None:
    """Say which items had runs from before (a re-run of the same input), and what was done with them."""
    from collections import Counter

    before = [r for r in results if r.earlier in ("done", "waiting")]
    if before:
        states = ", ".join(f"{k} {v}" for k, v in Counter(r.status for r in before).most_common())
        console.print(f"{len(before)} item(s) already have a run from an earlier run of this input ({states}); "
                      f"not run again (to run them again on purpose: --again LABEL)", highlight=False)
    resumed = sum(r.earlier == "resumed" for r in results)
    if resumed:
        console.print(f"{resumed} unfinished run(s) from before were resumed from their journal: side effects "
                      f"already made were not repeated", highlight=False)
    held = [r for r in results if r.earlier == "held"]
    if held:
        console.print(f"{len(held)} item(s) are being run by another live worker now, e.g. {held[0].run_id}; "
                      f"left to it", highlight=False)


def _differs_note(results: list[Any]) -> None:
    """Warn when an item's run from before was of other content under the same id: that run stands."""
    differs = [r for r in results if r.differs]
    if differs:
        r = differs[0]
        click.echo(f"warning: {len(differs)} item(s) have the id of an earlier run whose input differs, e.g. "
                   f"{r.item_id} (run {r.run_id}); the earlier run stands and this input's version was not run "
                   f"(to run it as a new run: --again LABEL)", err=True)


def _summary_table(summaries: list[Any]) -> Table:
    t = Table(title="Workflow summary", title_justify="left")
    for col in ("workflow", "items", "auto-resolved", "escalated", "denied", "failed", "tokens", "cost USD",
                "p50 step ms", "p95 step ms"):
        t.add_column(col, justify="left" if col == "workflow" else "right")
    for s in summaries:
        t.add_row(s.workflow, str(s.items), str(s.auto_resolved), str(s.escalated), str(s.denied), str(s.failed),
                  f"{s.tokens:,}", f"{s.cost_usd:.4f}", f"{s.p50_step_ms:.2f}", f"{s.p95_step_ms:.2f}")
    return t


def _details(console: Console, s: Any) -> None:
    outcomes = ", ".join(f"{k} {v}" for k, v in s.outcomes.items())
    models = ", ".join(f"{k} {v}" for k, v in s.models.items()) or "none"
    console.print(f"  {s.workflow}: outcomes: {outcomes}; models: {models}"
                  + (f"; provider fallbacks: {s.fallbacks}" if s.fallbacks else ""))


@click.command("run")
@click.argument("workflow")
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Items to run: JSON array or object, .jsonl or .csv (default: the shipped sample).")
@click.option("--as", "requested_by", default="operator", show_default=True, help="Who starts the runs.")
@click.option("--limit", type=click.IntRange(min=1), help="Run only the first N items.")
@click.option("--again", "again", metavar="LABEL",
              help="Run items that already have a run again, on purpose, as new runs (their side effects are "
                   "repeated). LABEL names this re-run: recorded (rerun_requested), and the same command with the "
                   "same LABEL after a crash finds its runs instead of repeating them.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of a table.")
@session_options(create_key=True)
def run_command(workflow: str, input_path: Path | None, requested_by: str, limit: int | None, again: str | None,
                as_json: bool, db: Path, key: Path, rules: tuple[Path, ...], directory: Path | None,
                providers: Path | None, mask: Path | None) -> None:
    """Run WORKFLOW once per input item, asking the policy before every step.

    Workflows: invoice-exceptions, it-ticket-triage, supply-chain-disruption,
    fraud-routing, marketing-campaign. Runs that need a human pause as `waiting_approval`; see
    `policyengine runs list --status waiting_approval` and `policyengine approve`.

    Each item has one run (its id comes from the workflow and the item's id, or
    its content): running the same input again, e.g. after a crash, starts only
    the items without a run, resumes interrupted runs from their journal and
    reports the rest; no side effect is repeated. --again LABEL runs them anew.
    """
    from ..orchestrator.batch import plan
    from ..orchestrator.runner import RunError
    from ..orchestrator.workflows import DEFAULT_INPUT, load_items, registered, sample_path

    workflows = registered()
    if workflow not in workflows:
        raise click.BadParameter(f"unknown workflow {workflow!r}; choose one of {', '.join(workflows)}",
                                 param_hint="WORKFLOW")
    if input_path is None and workflow not in DEFAULT_INPUT:
        raise click.UsageError(f"workflow {workflow!r} has no shipped sample: give its items with --input FILE")
    try:
        items = load_items(input_path or sample_path(workflow), workflows[workflow])
    except ValueError as exc:
        _fail(str(exc))
    items = items[:limit] if limit else items
    try:
        plan(workflows[workflow], items, again)  # repeated items, a bad label: refused before anything is written
    except RunError as exc:
        _fail(f"{input_path or sample_path(workflow)}: {exc}")
    console = _console(stderr=as_json)
    try:
        with _session(db, key, rules, directory, providers, mask, create_key=True) as session:
            session.orchestrator.expire()  # every writing command records overdue approvals as expired
            session.record_policy_loaded(requested_by)
            summary, results = _run_batch(session.orchestrator, workflow, items, requested_by,
                                          _console(stderr=True), again=again)
    except _errors() as exc:
        _fail(str(exc))
    _differs_note(results)
    if as_json:
        doc = summary.to_dict()
        doc["runs"] = [{"run_id": r.run_id, "item_id": r.item_id, "status": r.status, "outcome": r.outcome,
                        "reason": r.reason, "models": list(r.models), "earlier": r.earlier, "differs": r.differs}
                       for r in results]
        click.echo(json.dumps(doc))
        return
    console.print(_summary_table([summary]))
    _details(console, summary)
    _earlier_notes(console, results)
    waiting = [r for r in results if r.status == "waiting_approval" and r.approval is not None]
    if waiting:
        r = waiting[0]
        console.print(f"{len(waiting)} run(s) wait for approval, e.g. {r.run_id} (role {r.approval.role}): "
                      f"policyengine approve {r.run_id} --as USER --db {db}")


@click.command("demo")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_DB_PATH,
              show_default=True, help=_DB_HELP)
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_KEY_PATH,
              show_default=True, help="Ed25519 signing key (created if missing).")
@click.option("--limit", type=click.IntRange(min=1), help="Items per workflow (default: all shipped samples).")
@_mask_option
def demo_command(db: Path, key: Path, limit: int | None, mask: Path | None) -> None:
    """Run the five mission workflows on the shipped sample data and rules.

    Uses (and creates if needed) ./policyengine.duckdb, ./policyengine.key and,
    beside the database, policyengine.mask.yaml (a copy of the shipped example
    masking config, applied by every later command that writes to the database);
    re-running adds new runs to the same database (the sample items run anew, as
    fresh runs: unlike `policyengine run`, the demo does not look earlier runs up).
    """
    from ..orchestrator.approvals import deciders
    from ..orchestrator.session import example_mask
    from ..store.files import MASK_NAME, StoreError, beside_database
    from ..orchestrator.workflows import WORKFLOWS, load_items, sample_path

    from ..orchestrator.session import SessionConfig

    problem = SessionConfig(db=db, key=key, create_key=True).key_problem()
    if problem is not None:  # before writing anything
        _fail(problem)
    try:
        beside = beside_database(db, MASK_NAME)
    except StoreError as exc:
        _fail(str(exc))
    if mask is None and not beside.exists() and beside.parent.is_dir():
        try:
            shutil.copyfile(example_mask(), beside)
        except OSError as exc:
            _fail(f"{beside}: cannot write the example masking config: {exc.strerror}")
        click.echo(f"wrote {beside} (the shipped example masking config; edit it to mask other fields)", err=True)
    console = _console()
    summaries, waiting = [], []
    try:
        with _session(db, key, (), None, None, mask, create_key=True) as session:
            orch = session.orchestrator
            orch.expire()
            session.record_policy_loaded("operator")
            for name in WORKFLOWS:
                items = load_items(sample_path(name))[:limit] if limit else load_items(sample_path(name))
                summary, results = _run_batch(orch, name, items, "operator", _console(stderr=True), fresh=True)
                summaries.append(summary)
                waiting += [r for r in results if r.status == "waiting_approval" and r.approval is not None]
            example = next(((r, who) for r in waiting
                            for who in deciders(r.approval, orch.directory, orch.policy.policy_set.roles_of)), None)
            used_mask = session.mask
            in_db = orch.store.counts().get("waiting_approval", 0)  # earlier demos' waiting runs too
    except _errors() as exc:
        _fail(str(exc))
    console.print(_summary_table(summaries))
    for s in summaries:
        _details(console, s)
    q = shlex.quote
    pub = Path(f"{key}.pub.pem")
    click.echo(f"\nRuns, budgets and the signed audit log: {db}\nSigning key: {key} (public key: {pub})\n"
               + (f"Audit payloads masked by: {used_mask}" if used_mask else "Audit payloads: not masked"))
    keyopt = "" if key == DEFAULT_KEY_PATH else f" --key {q(str(key))}"
    approve = (f"policyengine approve {example[0].run_id} --as {example[1]} --db {q(str(db))}{keyopt}",
               f"approve it as {example[1]} ({example[0].workflow} waits for role {example[0].approval.role})"
               ) if example else (f"policyengine approve RUN --as USER --db {q(str(db))}{keyopt}",
                                  "approve a waiting run (users and roles: data/directory.yaml)")
    hints = [
        (f"policyengine runs list --db {q(str(db))} --status waiting_approval",
         f"{in_db} run(s) waiting for a human" + (f" ({len(waiting)} from this demo)" if in_db != len(waiting) else "")),
        approve,
        (f"policyengine audit verify --db {q(str(db))} --pubkey {q(str(pub))}", "check the signed audit trail"),
        ("policyengine report --list", f"reports for auditors (then: policyengine report NAME --db {q(str(db))})"),
    ]
    width = max(len(cmd) for cmd, _ in hints)
    console.print("\nNext:\n" + "\n".join(f"  {cmd:<{width}}   {what}" for cmd, what in hints), highlight=False)


# --- runs ----------------------------------------------------------------------------


@click.group("runs")
def runs_group() -> None:
    """List, inspect and expire workflow runs."""


def _ts(t: datetime | None) -> str:
    return t.isoformat(sep=" ", timespec="seconds") + "Z" if t else ""


def _db_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_DB_PATH,
                        show_default=True, help=_DB_HELP)(f)


def _now_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--now", "now", help="Show as of this ISO 8601 time (read-only).")(f)


def _writing_now_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--now`` of a command that writes: refused unless ``--clock-override`` (test-only, recorded)."""
    f = clock_override_option(f)
    return click.option("--now", "now", help="Test-only, with --clock-override: treat this ISO 8601 time as now "
                                             "(recorded in the audit log).")(f)


def _view(db: Path, now: str | None) -> Any:
    from ..orchestrator.session import RunView

    ctx = click.get_current_context(silent=True)
    state = ctx.meta.get("policyengine.state") if ctx is not None else None
    return RunView(db, _now(now), state=state)


def _overdue_note(count: int) -> None:
    if count:
        click.echo(f"{count} approval(s) are past their deadline; the expiry is recorded by the next approve, reject "
                   f"or run, or by `policyengine runs expire`", err=True)


@runs_group.command("list")
@click.option("--status", type=click.Choice(["running", "waiting_approval", "completed", "denied", "failed",
                                             "rejected", "expired"]), help="Only runs in this state.")
@click.option("--workflow", help="Only runs of this workflow.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Show at most N runs; when there are more, stderr says how many.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run.")
@_now_option
@_db_option
@_state_option
def runs_list(status: str | None, workflow: str | None, limit: int, as_json: bool, now: str | None,
              db: Path) -> None:
    """List runs, newest first. Read-only: needs no signing key.

    A pending approval past its deadline shows as overdue; it is recorded as
    expired by the next writing command or `policyengine runs expire`.
    """
    try:
        with _view(db, now) as view:
            runs = view.runs(status=status, workflow=workflow, limit=limit + 1)
            total = _count_runs(view, status, workflow) if len(runs) > limit else len(runs)
            runs = runs[:limit]
            gates = {r.run_id: (view.pending(r.run_id) or [None])[0] for r in runs if r.status == "waiting_approval"}
            late = {run_id for run_id, g in gates.items() if g is not None and view.overdue(g)}
    except _errors() as exc:
        _fail(str(exc))
    if as_json:
        for r in runs:
            gate = gates.get(r.run_id)
            click.echo(json.dumps({"run_id": r.run_id, "workflow": r.workflow, "item_id": r.item_id,
                                   "status": r.status, "outcome": r.outcome, "requested_by": r.requested_by,
                                   "created_at": _ts(r.created_at), "waiting_for": gate.role if gate else None,
                                   "deadline": _ts(gate.deadline_at) if gate else None,
                                   "overdue": r.run_id in late}))
        _overdue_note(len(late))
        _truncated_note(len(runs), total)
        return
    t = Table(title=f"Runs in {view.where}", title_justify="left")
    for col in ("run", "workflow", "item", "status", "outcome", "waiting for", "deadline", "created"):
        t.add_column(col)
    for r in runs:
        gate = gates.get(r.run_id)
        deadline = _ts(gate.deadline_at) if gate else ""
        t.add_row(r.run_id, r.workflow, r.item_id or "", r.status + (" (overdue)" if r.run_id in late else ""),
                  r.outcome or "", gate.role if gate else "", deadline, _ts(r.created_at))
    _console().print(t)
    _overdue_note(len(late))
    _truncated_note(len(runs), total)


def _count_runs(view: Any, status: str | None, workflow: str | None) -> int:
    """How many runs match the filters of ``runs list`` (asked only when the list was cut at --limit)."""
    if view.conn is None:  # shared run state
        return len(view.runs(status=status, workflow=workflow, limit=2**62))
    return view.conn.execute(
        "SELECT count(*) FROM orch_runs WHERE ($status IS NULL OR status = $status) "
        "AND ($workflow IS NULL OR workflow = $workflow)", {"status": status, "workflow": workflow}).fetchone()[0]


def _truncated_note(shown: int, total: int) -> None:
    if total > shown:
        click.echo(f"showing {shown} of {total} runs (use --limit)", err=True)


@runs_group.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="The run, its steps and approvals as JSON.")
@_now_option
@_db_option
@_state_option
def runs_show(run_id: str, as_json: bool, now: str | None, db: Path) -> None:
    """Show one run (id or unique prefix): its steps, decisions and approvals. Read-only: needs no key."""
    try:
        with _view(db, now) as view:
            run, steps, approvals = view.show(run_id)
            late = [view.overdue(a) for a in approvals]
    except _errors() as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps({
            "run_id": run.run_id, "workflow": run.workflow, "item_id": run.item_id, "status": run.status,
            "outcome": run.outcome, "requested_by": run.requested_by, "reason": run.error, "tokens": run.tokens,
            "cost_usd": run.cost_usd,
            "steps": [{"step": s.step, "kind": s.kind, "status": s.status, "effect": s.effect, "model": s.model,
                       "reason": s.reason, "output": s.output_dict()} for s in steps],
            "approvals": [{"gate": a.gate, "role": a.role, "status": a.status, "approver": a.approver,
                           "deadline": _ts(a.deadline_at), "note": a.note, "overdue": o}
                          for a, o in zip(approvals, late, strict=True)]}))
        _overdue_note(sum(late))
        return
    console = _console()
    console.print(f"[bold]{run.run_id}[/bold]  {run.workflow}  item {run.item_id}  status [bold]{run.status}"
                  f"[/bold]{' (overdue)' if any(late) else ''}  outcome {run.outcome or '-'}  "
                  f"requested by {run.requested_by}")
    if run.error:
        console.print(f"  reason: {run.error}")
    t = Table(title_justify="left")
    for col in ("#", "step", "kind", "status", "policy", "model", "ms", "detail"):
        t.add_column(col)
    for s in steps:
        detail = s.reason or (s.output or "")
        t.add_row(str(s.ord), s.step, s.kind, s.status, s.effect or "", s.model or "",
                  f"{s.latency_ms:.2f}" if s.latency_ms is not None else "", detail)  # wrapped, never cut
    console.print(t)
    for a, o in zip(approvals, late, strict=True):
        console.print(f"  gate {a.gate}: role {a.role}, {a.status}" + (" (overdue)" if o else "")
                      + (f" by {a.approver}" if a.approver else "")
                      + (f", deadline {_ts(a.deadline_at)}" if a.deadline_at else "")
                      + (f" — {a.note}" if a.note else ""), highlight=False)
    _overdue_note(sum(late))


def _migrate_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--migrate-policy", "migrate_policy", is_flag=True,
        help="Decide a run under rules other than those it was started with (recorded as policy_migrated; "
             "only for roles listed in migrate_policy_roles of the user directory).")(f)


def _migrator_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--as", "user", help="Who migrates runs started under other rules (with --migrate-policy; "
                                             "a user of the directory holding a migrate_policy_roles role).")(f)


@runs_group.command("expire")
@_migrator_option
@_migrate_option
@_writing_now_option
@session_options(create_key=False)
def runs_expire(user: str | None, migrate_policy: bool, now: str | None, clock_override: bool, db: Path, key: Path,
                rules: tuple[Path, ...], directory: Path | None, providers: Path | None, mask: Path | None) -> None:
    """End every approval whose deadline has passed; the gate's `else` decides the run.

    Refused when a run was started under rules other than those loaded now,
    unless --migrate-policy --as USER (recorded as policy_migrated).
    """
    at = writing_now(now, clock_override, "runs expire")
    try:
        with _session(db, key, rules, directory, providers, mask, now=at, command="runs expire") as session:
            results = session.orchestrator.expire(migrate_policy=migrate_policy, by=user, other_policies="refuse")
    except _errors() as exc:
        _fail(str(exc))
    for r in results:
        click.echo(f"{r.run_id}\t{r.workflow}\t{r.status}\t{r.reason or ''}")
    click.echo(f"{len(results)} approval(s) expired", err=True)


@runs_group.command("resume")
@click.argument("run_id", required=False)
@_migrator_option
@_migrate_option
@session_options(create_key=False)
def runs_resume(run_id: str | None, user: str | None, migrate_policy: bool, db: Path, key: Path,
                rules: tuple[Path, ...], directory: Path | None, providers: Path | None, mask: Path | None) -> None:
    """Resume RUN_ID, or every run a crash interrupted; finished steps never run again.

    Refused when a run was started under rules other than those loaded now,
    unless --migrate-policy --as USER (recorded as policy_migrated).
    """
    try:
        with _session(db, key, rules, directory, providers, mask) as session:
            orch = session.orchestrator
            orch.expire()  # a writing command records the expiry of overdue approvals (under their own rules)
            results = ([orch.resume(run_id, migrate_policy=migrate_policy, by=user)] if run_id
                       else orch.recover(migrate_policy=migrate_policy, by=user))
    except _errors() as exc:
        _fail(str(exc))
    for r in results:
        click.echo(f"{r.run_id}\t{r.workflow}\t{r.status}\t{r.outcome or ''}")
    click.echo(f"{len(results)} run(s) resumed", err=True)


# --- approve / reject ----------------------------------------------------------------


def _decide(action: str, run_id: str, user: str, note: str | None, now: str | None, db: Path, key: Path,
            rules: tuple[Path, ...], directory: Path | None, providers: Path | None, mask: Path | None,
            migrate_policy: bool = False, clock_override: bool = False) -> None:
    at = writing_now(now, clock_override, action)
    try:
        with _session(db, key, rules, directory, providers, mask, now=at, command=action) as session:
            orch = session.orchestrator
            decide = orch.approve if action == "approve" else orch.reject
            result = decide(run_id, user, note, migrate_policy=migrate_policy)
    except _errors() as exc:
        _fail(str(exc))
    verb = "approved" if action == "approve" else "rejected"
    tail = (f" (waiting again: {result.reason})" if result.status == "waiting_approval"
            else f" ({result.reason})" if result.status == "running" else "")
    click.echo(f"{result.run_id} {verb} by {user}; run {result.status}, outcome {result.outcome}{tail}")


@click.command("approve")
@click.argument("run_id")
@click.option("--as", "user", required=True, help="The approver (a user of the directory holding the gate's role).")
@click.option("--note", help="Why; kept in the audit record.")
@_migrate_option
@_writing_now_option
@session_options(create_key=False)
def approve_command(run_id: str, user: str, note: str | None, migrate_policy: bool, now: str | None,
                    clock_override: bool, db: Path,
                    key: Path, rules: tuple[Path, ...], directory: Path | None, providers: Path | None,
                    mask: Path | None) -> None:
    """Approve the pending gate of RUN_ID (the whole run id) and resume the run.

    Refused when USER started the run (four-eyes), lacks the gate's role, the
    deadline has passed, or the rules are not those the run was started with;
    and when RUN_ID is not a whole run id (a prefix or "" decides nothing).
    """
    _decide("approve", run_id, user, note, now, db, key, rules, directory, providers, mask, migrate_policy,
            clock_override)


@click.command("reject")
@click.argument("run_id")
@click.option("--as", "user", required=True, help="The approver rejecting (same rules as approve).")
@click.option("--note", help="Why; kept in the audit record.")
@_migrate_option
@_writing_now_option
@session_options(create_key=False)
def reject_command(run_id: str, user: str, note: str | None, migrate_policy: bool, now: str | None,
                    clock_override: bool, db: Path,
                   key: Path, rules: tuple[Path, ...], directory: Path | None, providers: Path | None,
                   mask: Path | None) -> None:
    """Reject the pending gate of RUN_ID (the whole run id): the step is denied and the workflow's fallback runs."""
    _decide("reject", run_id, user, note, now, db, key, rules, directory, providers, mask, migrate_policy,
            clock_override)


