"""``policyengine eval``: decide requests from a file or stdin, one JSON decision per line.

Thin over the library: ``load_policy``, ``read_requests`` and ``Policy.evaluate``
(or ``Policy.explain`` with ``--explain``). Decisions go to stdout; traces,
rule-file findings and input problems go to stderr.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Container
from datetime import datetime
from typing import Any

import click

from .clock import clock_override_option, typed_time, writing_now
from . import state_value

# A place each decision is also sent to (the audit log, when ``--audit`` is given).
DecisionSink = Callable[[Any, Any], int]  # record(request, decision) -> its audit seq


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _blocked_models(audit: str | None) -> Container[str]:
    """Models a bias or drift monitor suspended in the audit database: the engine denies them (and every
    model, naming why, when the list cannot be read; not a database: opening the audit log says so)."""
    if audit is None:
        return frozenset()
    from policyengine.store.blocklist import serving_blocks

    return serving_blocks(audit)


def _open_input(source: str) -> Any:
    if source == "-":
        return sys.stdin
    try:
        return open(source, encoding="utf-8")  # noqa: SIM115 - closed by the command
    except FileNotFoundError:
        _fail(f"{source}: no such input file")
    except OSError as error:
        _fail(f"{source}: cannot read input: {error.strerror or error}")
    raise AssertionError  # unreachable


def _load_directory(path: str | None) -> Any:
    """``--directory FILE``: user id -> roles, read by the orchestrator's loader (data/directory.yaml format)."""
    if path is None:
        return None
    from policyengine.orchestrator.approvals import Directory

    try:
        return Directory.load(path).roles()
    except ValueError as error:  # the loader names the file and the problem
        _fail(str(error))
    raise AssertionError  # unreachable


# Trace lines of declarations that did not apply to the request (policyengine.explain's wording).
_NOT_MATCHING = re.compile(r"^\s*(?:rule \S+ \[\w+\] .*: no match: |residency \S+: does not apply: "
                           r"|escalate \S+: does not match: )")


def _trace(lines: tuple[str, ...], only_matching: bool) -> list[str]:
    """The ``--explain`` trace; without ``--all``, the declarations that did not apply are counted, not listed."""
    if not only_matching:
        return list(lines)
    kept = [line for line in lines if not _NOT_MATCHING.match(line)]
    skipped = len(lines) - len(kept)
    if skipped:
        at = next((i for i, line in enumerate(kept) if line.startswith("decision: ")), len(kept))
        kept.insert(at, f"  ({skipped} more did not match this request; --all lists them with why)")
    return kept


_CLAIMED_ROLES = ("approvals are judged by the roles the request claims for its approvers; "
                  "pass --directory FILE to judge them by a user directory")


def _audit_sink(audit: str | None, key: str | None, mask: str | None,
                now: datetime | None = None, policy: Any = None) -> tuple[DecisionSink | None, Callable[[], object]]:
    """Hook for ``--audit PATH --key KEYFILE [--mask FILE]``: record every decision as an audit ``decision`` event.

    Uses ``policyengine.audit.record_decisions(path, key_path, masking=...)``: a
    context manager yielding ``record(request, decision)``, called once per
    decision in input order (``request`` is None for a line that was not JSON).
    It writes a ``decision`` event per docs/audit-events.md; with ``--mask`` the
    fields ``policyengine.audit.load_masking(FILE)`` names are dropped or hashed
    before anything is written.
    """
    if audit is None:
        if mask is not None:
            raise click.UsageError("--mask only applies with --audit DB --key KEYFILE")
        return None, lambda: None
    if key is None:
        raise click.UsageError("--audit needs --key KEYFILE (the Ed25519 signing key)")
    from policyengine.audit import AuditError, record_decisions
    from policyengine.audit.masking import masking_for

    try:  # --mask, else policyengine.mask.yaml beside the database, as every writing command; and the rules' masks
        masking = masking_for(audit, mask, policy)
    except AuditError as error:  # names the file and what is wrong with it
        _fail(str(error))
    from policyengine.clock import clock_override_payload

    extra = {"clock_override": clock_override_payload(now, "eval")} if now is not None else {}
    manager = record_decisions(audit, key, masking=masking, **extra)
    try:
        record = manager.__enter__()
    except Exception as error:  # the audit package names the bad path or key in its own words
        _fail(str(error))
    return record, lambda: manager.__exit__(None, None, None)


def _versions(audit: str | None) -> Any:
    """The model version aliases recorded in the ``--audit`` log (none yet: each alias names the first version)."""
    from policyengine.models_registry import load_resolver
    from policyengine.reporting.errors import ReportError

    try:
        return load_resolver(audit)
    except ReportError:
        return load_resolver(None)  # not a database: opening the audit log says so in one line


class _Versioned:
    """A decision whose JSON also names the ``model_version`` used (``Decision`` itself has no such field)."""

    def __init__(self, decision: Any, used: str) -> None:
        self._decision, self.model_version = decision, used

    def __getattr__(self, name: str) -> Any:
        return getattr(self._decision, name)

    def to_dict(self) -> dict[str, Any]:  # what the audit recorder serialises, too
        return {**self._decision.to_dict(), "model_version": self.model_version}

    def to_json(self) -> str:
        import json

        return json.dumps(self.to_dict(), separators=(",", ":"))


def _with_request(item: Any, request: Any) -> Any:
    from dataclasses import replace

    return replace(item, request=request)


def _audit_error() -> type[Exception]:
    from policyengine.audit.errors import AuditError

    return AuditError


def _durable_output(sink: Any) -> Any:
    """With ``--audit``: a decision line is printed only after its record is durable (group commit, in order)."""
    if sink is None:
        return None
    from policyengine.audit.decisions import DurableEmitter

    return DurableEmitter(sink.wait_durable, lambda lines: click.echo("\n".join(lines)))


def _close_audit(output: Any, close_sink: Callable[[], object]) -> None:
    """Print what is durable, then sign and close the log; a write failure is one line and exit 1."""
    try:
        try:
            if output is not None:
                output.close()
        finally:
            close_sink()
    except _audit_error() as error:
        context = error.__context__  # the printer's error, then the log's close saying what it did not write
        while context is not None and not isinstance(context, SystemExit):
            context = context.__context__
        if context is None:
            _fail(str(error))  # else: the command is already stopping with this error's line


def _decide_batched(policy: Any, stream: Any, source: str, now: datetime | None, directory: Any,
                    warned: bool, fixed_state: bool, sink: DecisionSink | None, output: Any) -> tuple[int, int]:
    """``policyengine.jsonl.decide_json_lines`` over the input's bytes; decisions to stdout, problems to stderr.

    With ``--audit`` every decision is recorded (``sink``) and its line goes to
    ``output``, which prints it once that record is durable.
    """
    import gc

    from policyengine.jsonl import NotUtf8, decide_json_lines

    gc.freeze()  # the loaded policy lives until exit: collections need not walk it again and again
    out = sys.stdout  # click.get_text_stream is deprecated (Click 9 drops it); CliRunner swaps sys.stdout too
    last = 0  # the seq of the latest record: a read's decisions are printed once it is durable

    def record(request: Any, decision: Any) -> None:
        nonlocal last
        last = sink(request, decision)

    def write(text: str) -> None:
        if output is not None:
            output.submit(last, text)
            return
        out.write(text + "\n")
        out.flush()  # a caller in a pipe waits for each answer

    def claimed_roles(where: str) -> None:
        click.echo(f"warning: input {where}: {_CLAIMED_ROLES}", err=True)

    try:
        return decide_json_lines(policy, stream.buffer, now=now, directory=directory, out=write,
                                 err=lambda line: click.echo(line, err=True),
                                 claimed=None if warned else claimed_roles, fixed_state=fixed_state,
                                 record=None if sink is None else record)
    except NotUtf8 as error:
        _fail(f"{source}: input is not UTF-8 text ({error})")
    raise AssertionError  # unreachable


@click.command("eval")
@click.option("--rules", "rules", multiple=True, metavar="PATH",
              help="Rule file or folder of .policy files (repeatable; more paths may follow as arguments).")
@click.option("--input", "source", default="-", show_default=True, metavar="FILE",
              help="A JSON request, a JSON array of requests, or JSON Lines; '-' reads stdin.")
@click.option("--explain", is_flag=True,
              help="Print a readable trace to stderr: the rules, gates and residency rules that matched.")
@click.option("--only-matching/--all", "only_matching", default=True, show_default=True,
              help="With --explain: only what matched (default), or every rule considered and why it did not match.")
@click.option("--ledger", type=click.Path(dir_okay=False), metavar="DB",
              help="DuckDB file holding budget usage (the embedded store; same as --state DB); it must exist "
                   "unless --create is given.")
@click.option("--create", "create_ledger", is_flag=True,
              help="Start a new, empty --ledger file when it does not exist (budgets then read zero usage).")
@click.option("--state", metavar="URL", envvar="POLICYENGINE_STATE", callback=state_value,
              help="Where budget usage lives: a DuckDB file or postgresql://... shared by workers (its "
                   "block list then decides which models are blocked). Env: POLICYENGINE_STATE.")
@click.option("--now", "now_text", metavar="TIME",
              help="Decide as of this ISO 8601 UTC time (budgets, deadlines); with --audit only together with "
                   "--clock-override (test-only, recorded).")
@clock_override_option
@click.option("--audit", type=click.Path(dir_okay=False), metavar="PATH",
              help="Also record each decision in this audit database (needs --key).")
@click.option("--key", type=click.Path(dir_okay=False), metavar="KEYFILE", help="Signing key for --audit.")
@click.option("--mask", metavar="FILE",
              help="Masking config (YAML, see docs/audit.md): drop or hash these fields before --audit writes them.")
@click.option("--directory", "directory_path", metavar="FILE",
              help="User directory (YAML, as data/directory.yaml): approvers' roles come from it, "
                   "not from what the request claims.")
@click.argument("more_rules", nargs=-1, metavar="[PATHS]...")
def eval_command(rules: tuple[str, ...], source: str, explain: bool, only_matching: bool, ledger: str | None,
                 create_ledger: bool, state: str | None, now_text: str | None, clock_override: bool, audit: str | None,
                 key: str | None, mask: str | None, directory_path: str | None,
                 more_rules: tuple[str, ...]) -> None:
    """Decide requests against rule files; print one JSON decision per line.

    Exit status is 0 when every request was decided, 1 when the rule files have
    errors, the input holds no request, or some input was malformed (those
    requests are still denied, with the reason, in the output).

    Example: policyengine eval --rules rules/ --input requests.jsonl --explain
    (also: policyengine eval --rules a.policy b.policy < request.json)
    """
    from policyengine.diagnostics import PolicyError, render_findings
    from policyengine.engine import iter_requests, load_policy

    rules = (*rules, *more_rules)
    if not rules:
        raise click.UsageError("give the rule files: --rules PATH (a file or a folder of .policy files)")
    now = writing_now(now_text, clock_override, "eval --audit") if audit is not None else typed_time(now_text, "--now")
    directory = _load_directory(directory_path)
    stream = _open_input(source)
    budget_ledger = store = None
    if ledger is not None and state is not None:
        raise click.UsageError("give either --ledger or --state, not both")
    if ledger is None and state is None and create_ledger:
        raise click.UsageError("--create only applies with --ledger DB or --state DB")
    if ledger is not None or state is not None:
        from pathlib import Path

        from policyengine.store import StoreError, open_store

        target = state if state is not None else ledger
        is_file = "://" not in target
        if is_file and not create_ledger and not Path(target).exists():  # a typo would read zero usage
            _fail(f"{target}: no such budget ledger (pass --create to start an empty one)")

        try:
            store = open_store(target)
        except StoreError as error:
            _fail(f"cannot open budget ledger: {error}")
        except Exception as error:  # duckdb reports a corrupt or foreign file
            _fail(f"{state or ledger}: cannot open budget ledger: {str(error).splitlines()[0]}")
        budget_ledger = store.ledger
    blocked = _blocked_models(audit)
    if store is not None and store.kind == "postgresql":  # blocks a monitor on any host added, as serve reads them
        from policyengine.store.blocklist import LiveBlockList

        try:
            blocked = LiveBlockList(store.blocks)
        except Exception as error:  # noqa: BLE001 - unread, nothing is decided: one line, exit 1
            _fail(f"cannot read the shared block list: {str(error).splitlines()[0]}")
    try:
        policy = load_policy(list(rules), ledger=budget_ledger, blocked=blocked)
    except PolicyError as error:
        click.echo(render_findings(error.findings), err=True)
        sys.exit(1)
    # jsonl.py: batches, orjson; not where versioned models and agents must be stamped with the version used
    batched = not explain and hasattr(stream, "buffer") and not policy.policy_set.declares_versions
    # model version aliases (and DuckDB) only where used; read before --audit opens the log for writing
    versions = None if batched else _versions(audit)
    sink, close_sink = _audit_sink(audit, key, mask, now, policy)
    malformed = decided = 0
    warned = directory is not None
    output = _durable_output(sink)
    try:
        if batched:
            # without --ledger/--state the in-memory ledger is this run's own: nothing charges it
            decided, malformed = _decide_batched(policy, stream, source, now, directory, warned,
                                                 fixed_state=store is None, sink=sink, output=output)
        for item in () if batched else iter_requests(stream):
            decided += 1
            if not warned and isinstance(item.request, dict) and item.request.get("approvals"):
                click.echo(f"warning: input {item.where}: {_CLAIMED_ROLES}", err=True)
                warned = True  # once per run
            request, used = versions(policy, item.request) if item.error is None else (item.request, None)
            if item.error is not None:
                decision = policy.malformed([f"{item.where}: {item.error}"])
            elif explain:
                explanation = policy.explain(request, now=now, directory=directory)
                decision = explanation.decision
                click.echo(f"--- request at {item.where}", err=True)
                click.echo("\n".join(_trace(explanation.trace, only_matching)), err=True)
            else:
                decision = policy.evaluate(request, now=now, directory=directory)
            if used is not None:  # the version the request used, in the answer and its audit record
                decision, item = _Versioned(decision, used), _with_request(item, request)
            if decision.errors:
                malformed += 1
                where = "input " if item.error is not None else f"input {item.where}: "
                click.echo(where + "; ".join(decision.errors), err=True)
            if output is not None:  # printed only once its audit record is committed
                output.submit(sink(item.request, decision), decision.to_json())
            else:
                click.echo(decision.to_json())
    except UnicodeDecodeError as error:
        _fail(f"{source}: input is not UTF-8 text ({error.reason} at byte {error.start})")
    except _audit_error() as error:  # disk full, I/O error: what was printed is in the log
        _fail(str(error))
    finally:
        if stream is not sys.stdin:
            stream.close()
        _close_audit(output, close_sink)
        if store is not None:
            store.close()
    if not decided:
        _fail(f"{'stdin' if source == '-' else source}: no request in the input")
    if malformed:
        sys.exit(1)


