"""Runs workflows, asking the engine before every step and recording everything.

For each step the runner (1) *plans*: restores it from the journal if it already
finished, else builds the engine request, evaluates it and records the decision;
a deny fails the step, an escalation pauses the run; (2) *performs* the allowed
step (model call with retries and fallback to the next allowed model, tool
call, data read), concurrently for a ``Parallel`` group; (3) *records* the
result: step journal, budget charge, audit events. Only (2) may run in worker
threads; recording stays on the calling thread, so audit order is deterministic.

Exactly-once for side effects: a tool with ``effect=True`` gets a journal row
``started``, committed with its intent and the journal before it, before it is
called, is passed the idempotency key ``run_id/step``, and its result is
committed as a receipt in ``orch_effects`` right after it returns. On resume, a
step with a receipt is completed from the receipt, never called or asked again;
a step that is ``started`` without a receipt is called again with the same key
(a tool must honour the key, as payment APIs do).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Protocol

import duckdb

from ..audit.errors import AuditError
from ..budgets import window_start
from ..decision import ApprovalRequired, BudgetWarning, Decision
from ..identity import IdentityError, canonical_identity
from ..store.holds import Hold, can_reserve, estimate_tokens, release, reserve, settle
from ..store.protocols import RunState
from .approvals import ApprovalRefused, Directory, check_decider, check_migrator, check_policy
from .ledger import BufferedLedger
from .providers import Attempt, Providers
from .state import ApprovalRecord, EffectRecord, RunRecord, StepRecord, naive_utc
from .workflow import (
    Ask,
    Completion,
    Context,
    DataRead,
    HumanWait,
    ModelCall,
    Parallel,
    RulesDecision,
    Step,
    ToolCall,
    Workflow,
    step_kind,
)

_RECORDING_NOTE = "while appending the"  # marks an exception raised by a bug in recording (see ``_audit``)

TERMINAL = frozenset({"completed", "denied", "failed", "rejected", "expired"})


class AuditSink(Protocol):
    """What the runner needs of ``policyengine.audit.AuditLog``."""

    def append(self, event: str, *, actor: str | None, workflow: str | None, run_id: str | None,
               payload: dict[str, Any], policy_hash: str | None) -> int: ...

    def flush(self) -> None: ...


class RunError(Exception):
    """A run cannot be found or is not in a state that allows the operation (exit 1)."""


class RecordError(Exception):
    """The audit log refused or failed to take a record: the run cannot go on unrecorded (exit 1)."""


class SimulatedCrash(BaseException):
    """Raised by a fault hook in tests to stop the runner as a crash would."""


@dataclass(frozen=True, slots=True)
class RunResult:
    """What happened to one run (so far): the summary table is built from these."""

    run_id: str
    workflow: str
    item_id: str | None
    status: str
    outcome: str | None
    tokens: int
    cost_usd: float
    step_ms: tuple[float, ...]
    reason: str | None = None
    approval: ApprovalRecord | None = None
    models: tuple[str, ...] = ()
    fallbacks: int = 0
    # a batch found this item's run from before: "done" or "waiting" (reported, not run again), "resumed" (a crash
    # interrupted it: driven on from its journal), "held" (another live worker drives it); None: started now
    earlier: str | None = None
    differs: bool = False  # the earlier run's input is not this item (same declared id, other content)


@dataclass(frozen=True, slots=True)
class _Final:
    """A step that needs no performing: restored, skipped, denied, failed or waiting."""

    status: str
    output: Mapping[str, Any] | None = None
    reason: str | None = None
    run_status: str | None = None
    approval: ApprovalRecord | None = None
    ms: float | None = None


@dataclass(slots=True)
class _Ready:
    """An allowed step, planned and waiting to be performed."""

    step: Step
    ord: int
    ask: Ask
    request: dict[str, Any]
    decision: Decision
    t0: float
    started_at: datetime
    ctx: Context
    events: list[tuple[str, dict[str, Any], str | None]] = field(default_factory=list)
    output: dict[str, Any] | None = None
    error: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    model: str | None = None
    model_request: dict[str, Any] | None = None
    completion: Completion | None = None
    hold: Hold | None = None  # budget reserved for the completed call, settled when it is recorded
    refusals: list[tuple[str, str, str]] = field(default_factory=list)  # (model, budget, unit) with no room
    refused: bool = False  # no allowed model had budget room for the call's estimate
    asked: dict[str, Any] | None = None  # the request before versions were resolved (each candidate resolves its own)
    model_versions: dict[str, str | None] = field(default_factory=dict)  # model -> the version its call used


def _requester(requested_by: str) -> str:
    """Who starts a run, in canonical form (``RunError`` when it has none), so four-eyes compares like with like."""
    try:
        return canonical_identity(requested_by, "requester")
    except IdentityError as exc:
        raise RunError(str(exc)) from None


def _reason_text(decision: Decision) -> str:
    parts = [f"{r.rule}: {r.message}" for r in decision.reasons[:3]]
    return "; ".join(parts) or decision.effect


def _decision_payload(request: dict[str, Any], decision: Decision, step: str, used: str | None) -> dict[str, Any]:
    """A ``decision`` record's payload; with ``model_version`` (also in the decision) when a version was used."""
    if used is None:
        return {"request": request, "decision": decision.to_dict(), "step": step}
    return {"request": request, "decision": {**decision.to_dict(), "model_version": used}, "step": step,
            "model_version": used}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


class Orchestrator:
    """Governed execution of workflows over one policy, one state store and one audit log."""

    def __init__(self, policy: Any, store: RunState, audit: AuditSink, *, workflows: Mapping[str, Workflow],
                 providers: Providers | None = None, directory: Directory | None = None,
                 ledger: BufferedLedger | None = None, clock: Callable[[], datetime] | None = None,
                 flush_every: int = 200, faults: Callable[[str, str], None] | None = None,
                 record_runs: bool = True,
                 versions: Callable[[Any, Any], tuple[Any, str | None]] | None = None) -> None:
        self.policy = policy
        self.store = store
        self.audit = audit
        self.workflows = workflows
        self.providers = providers or Providers()
        self.directory = directory or Directory(MappingProxyType({}))
        self._roles = self.directory.roles()
        self.ledger = ledger
        self.clock = clock or (lambda: datetime.now(UTC))
        self.flush_every = flush_every
        self.faults = faults
        self.record_runs = record_runs  # write a ``run`` audit event when a run ends or pauses
        self.versions = versions  # models_registry.Resolver: the model or agent version a request uses
        self._pool: ThreadPoolExecutor | None = None
        self._alerted: set[tuple] = set()  # budget alerts already recorded (per budget and window)
        self._last_seq: int | None = None  # seq of the last audit record appended
        self._again: dict[str, str] = {}  # run id -> the ``again`` label its batch ran it under (``run`` records)
        before_commit = getattr(audit, "before_commit", None)
        within = getattr(store, "write_within", None)
        # run state commits in the records' own transaction (the embedded store, on the log's database), or
        # first (another database): an audit record never says more than the committed state does
        self._with_records = before_commit is not None and within is not None
        if self._with_records:
            before_commit(self._ledger_durable)  # a charge ahead of its record only over-counts: fail closed
            before_commit(within, within=True)
        elif before_commit is not None:
            before_commit(self._state_durable)

    # --- public API ----------------------------------------------------------------

    def start(self, workflow: str | Workflow, item: Mapping[str, Any], *, requested_by: str,
              batch_id: str | None = None) -> RunResult:
        """Create a run for ``item``, drive it until it ends or pauses, and make it durable."""
        result = self._start(workflow, item, requested_by=_requester(requested_by), batch_id=batch_id)
        self.flush()
        return result

    def _start(self, workflow: str | Workflow, item: Mapping[str, Any], *, requested_by: str,
               batch_id: str | None, run_id: str | None = None) -> RunResult:
        """A new run of ``item`` (``run_id``: the one ``batch.run_id_of`` derived, else a random one)."""
        wf = self._workflow(workflow)
        now = naive_utc(self.clock())
        try:
            item_id = wf.item_id(item) or None
        except Exception:  # noqa: BLE001 - an item without a usable id still runs
            item_id = None
        run = RunRecord(run_id=run_id or f"r-{uuid.uuid4().hex[:12]}", batch_id=batch_id, workflow=wf.name,
                        item_id=item_id, requested_by=requested_by, status="running",
                        outcome=None, input=_dumps(dict(item)), error=None, policy_hash=self.policy.policy_hash,
                        tokens=0, cost_usd=0.0, created_at=now, updated_at=now)
        self.store.put(run)
        return self._drive(wf, run, fresh=True)

    def run_batch(self, workflow: str | Workflow, items: Iterable[Mapping[str, Any]], *, requested_by: str,
                  on_result: Callable[[RunResult], None] | None = None, again: str | None = None,
                  fresh: bool = False) -> list[RunResult]:
        """Run every item once per identity, flushing state, ledger and audit every ``flush_every`` runs.

        An item that already has a run (the same input run before, e.g. after a
        crash) is not started again: an ended or waiting run is reported, an
        interrupted one resumed from its journal (``batch``); ``again`` names an
        intentional re-run. ``fresh`` starts a new run (a random id) for every
        item, looking nothing up, as ``demo`` does: a fresh re-run repeats side effects.

        State and ledger are also committed before each audit commit, so a crash
        loses only runs the audit log does not record either; no side effect is
        lost, because a step with a side effect commits its intent, with the
        journal before it, first (``recover`` finishes those runs).
        """
        if not fresh:
            from .batch import run_batch

            return run_batch(self, workflow, items, requested_by=requested_by, on_result=on_result, again=again)
        if again is not None:
            raise RunError("again names a re-run of items that have runs; a fresh batch looks none up")
        batch_id = f"b-{uuid.uuid4().hex[:10]}"
        requested_by = _requester(requested_by)
        return self._collect((self._start(workflow, item, requested_by=requested_by, batch_id=batch_id)
                              for item in items), on_result)

    def _collect(self, results: Iterable[RunResult], on_result: Callable[[RunResult], None] | None) -> list[RunResult]:
        """A batch's results as ``results`` drives each run in turn: flushed every ``flush_every`` runs and at the end."""
        out = []
        for n, result in enumerate(results, 1):
            if n % self.flush_every == 0:
                self.flush()
            out.append(result)
            if on_result is not None:
                on_result(result)
        self.flush()
        return out

    def resume(self, run_id: str, *, migrate_policy: bool = False, by: str | None = None) -> RunResult:
        """Drive a run from its journal: finished steps are restored, never re-run.

        Refused when the policy loaded now is not the one the run was started
        under, unless ``migrate_policy`` by ``by`` (recorded; only for ``migrate_policy_roles``).
        """
        run = self._run(run_id)
        if run.status in TERMINAL:
            return self._result(run, ())
        (run,) = self._under_current_policy([run], migrate_policy, by, "resume")
        if not self.store.claim(run):
            raise RunError(f"run {run.run_id} cannot be resumed here: another live worker is driving it, or it "
                           f"is {run.status} (a decision resumes it)")
        result = self._drive(self._workflow(run.workflow), replace(run, status="running"))
        self.flush()
        return result

    def recover(self, *, migrate_policy: bool = False, by: str | None = None) -> list[RunResult]:
        """Resume every run a crash interrupted; their finished steps and side effects are not repeated.

        Runs started under other rules are refused (nothing is resumed) unless
        ``migrate_policy`` by ``by``, as for ``resume``.
        """
        # runs whose workflow is not installed here stay as they are, for a process where it is;
        # with shared state each claim takes one run a gone worker left, so workers share the work
        results: list[RunResult] = []
        seen: set[str] = set()
        while True:
            runs = [run for run in self.store.claim_unfinished(list(self.workflows))
                    if run.workflow in self.workflows and run.run_id not in seen]
            if not runs:
                return results
            seen.update(run.run_id for run in runs)
            runs = self._under_current_policy(runs, migrate_policy, by, "resume")
            results += [self._drive(self.workflows[run.workflow], run) for run in runs]
            self.flush()

    def approve(self, run_id: str, user: str, note: str | None = None, *, migrate_policy: bool = False) -> RunResult:
        """Record ``user``'s approval of the run's pending gate and resume the run.

        Refused when the policy loaded now is not the one the run was started
        under, unless ``migrate_policy`` (recorded; only for ``migrate_policy_roles``).
        """
        return self._decide(run_id, user, "approved", note, migrate_policy)

    def reject(self, run_id: str, user: str, note: str | None = None, *, migrate_policy: bool = False) -> RunResult:
        """Record ``user``'s rejection: the gated step is denied and the workflow's fallback runs."""
        return self._decide(run_id, user, "rejected", note, migrate_policy)

    def expire(self, *, migrate_policy: bool = False, by: str | None = None,
               other_policies: str = "skip") -> list[RunResult]:
        """End every approval whose deadline has passed, record it, and resume its run.

        A run started under other rules is not expired under these: with
        ``other_policies="skip"`` (what other writing commands do on the way) it
        is left for ``runs expire`` under its own rules; with ``"refuse"``
        (``runs expire``) nothing is expired unless ``migrate_policy`` by ``by``.
        """
        now = naive_utc(self.clock())
        results = []
        by_run: dict[str, list[ApprovalRecord]] = {}
        for row in self.store.overdue(now):
            by_run.setdefault(row.run_id, []).append(row)
        runs = [run for run_id in by_run if (run := self.store.run(run_id)) is not None and run.status not in TERMINAL]
        if other_policies == "skip" and not migrate_policy:
            runs = [run for run in runs if run.policy_hash in (None, self.policy.policy_hash)]
        runs = self._under_current_policy(runs, migrate_policy, by, "expire")
        for run in runs:
            expired = [replace(row, status="expired", decided_at=now) for row in by_run[run.run_id]]
            if not self.store.decide(run, expired):
                continue  # another worker expired (or decided) it first: it resumes there, once
            for row in expired:
                self._record_approval(run, row)
            results.append(self._continue(run))
        if results:
            self.flush()
        return results

    def _under_current_policy(self, runs: list[RunRecord], migrate: bool, by: str | None,
                              verb: str) -> list[RunRecord]:
        """``runs`` moved to the policy loaded now, as ``approve --migrate-policy`` moves a run.

        Refused before anything is written unless every run already is under
        it, or ``migrate`` by ``by``, a user holding a ``migrate_policy_roles``
        role; each move is audited as ``policy_migrated``.
        """
        current = self.policy.policy_hash
        moving = [run for run in runs if check_policy(run, current, migrate, verb)]
        if not moving:
            return runs
        if by is None:
            raise ApprovalRefused("--migrate-policy needs the user who migrates the runs (--as USER)")
        try:
            user = canonical_identity(by, "migrating user")
        except IdentityError as exc:
            raise ApprovalRefused(str(exc)) from None
        who = self.directory.users.get(user)
        if who is None:
            raise ApprovalRefused(f"unknown user {user!r}: not in the user directory {self.directory.source}")
        for run in moving:
            check_migrator(run, who, current, self.directory, self.policy.policy_set.roles_of)
        moved = {}
        for run in moving:
            self._audit(run, "policy_migrated", user, {"from": run.policy_hash, "to": current, "by": user,
                                                       "command": verb})
            moved[run.run_id] = replace(run, policy_hash=current)
        return [moved.get(run.run_id, run) for run in runs]

    def flush(self) -> None:
        """Make everything so far durable: ledger charges, run state, then the audit log.

        When run state commits with the records (``_with_records``), the log's
        commit writes it; what is left (rows no record describes) follows.
        """
        if self.ledger is not None:
            self.ledger.flush()
        if not self._with_records:
            self.store.flush()
        try:
            self.audit.flush()
        except AuditError as exc:  # disk full, I/O error: one line, not a traceback
            raise RecordError(f"audit log: {exc}") from None
        self.store.flush()

    def _ledger_durable(self) -> None:
        if self.ledger is not None:
            self.ledger.flush()

    def _state_durable(self) -> None:
        """Commit ledger charges and run state (the audit log calls this before each commit of its records)."""
        self._ledger_durable()
        self.store.flush()

    def close(self) -> None:
        self.flush()
        if self._pool is not None:
            self._pool.shutdown()

    def show(self, run_id: str) -> tuple[RunRecord, list[StepRecord], list[ApprovalRecord]]:
        run = self._run(run_id)
        return run, self.store.steps(run.run_id), self.store.approvals(run.run_id)

    # --- approvals -------------------------------------------------------------------

    def _decide(self, run_id: str, user: str, outcome: str, note: str | None, migrate: bool = False) -> RunResult:
        try:
            user = canonical_identity(user, "approver")
        except IdentityError as exc:
            raise ApprovalRefused(str(exc)) from None
        run = self._run(run_id, exact=True)  # a decision names its run whole: a prefix ("", "r-") could be any run
        self.expire()  # every writing command records overdue approvals as expired
        run = self._run(run.run_id)
        if run.status != "waiting_approval":
            ended = {"expired": "its approval deadline passed"}.get(run.status, f"it is {run.status}")
            raise RunError(f"run {run.run_id} is not waiting for approval: {ended}")
        pending = [a for a in self.store.approvals(run.run_id) if a.status == "pending"]
        if not pending:
            # waiting a moment ago: another worker's decision landed in between
            raise RunError(f"run {run.run_id} is not waiting for approval: another decision was recorded first")
        if any(a.deadline_at is not None and a.deadline_at <= naive_utc(self.clock()) for a in pending):
            # left overdue because it was started under other rules: expire it under those (or migrate it)
            raise RunError(f"run {run.run_id} is not waiting for approval: its approval deadline passed "
                           f"(record it with runs expire)")
        # the user decides every pending gate they may; refused if there is none
        mine, refusal = [], None
        for gate in pending:
            try:
                check_decider(run, gate, user, self.directory, self.policy.policy_set.roles_of)
                mine.append(gate)
            except ApprovalRefused as exc:
                refusal = refusal or exc
        if not mine:
            raise refusal  # type: ignore[misc]
        current = self.policy.policy_hash
        if check_policy(run, current, migrate):
            who = self.directory.users[user]
            check_migrator(run, who, current, self.directory, self.policy.policy_set.roles_of)
            self._audit(run, "policy_migrated", user, {"from": run.policy_hash, "to": current, "by": user,
                                                       "gates": [g.gate for g in mine], "outcome": outcome})
            run = replace(run, policy_hash=current)
        now = naive_utc(self.clock())
        decided = [replace(gate, status=outcome, approver=user, note=note, decided_at=now) for gate in mine]
        if not self.store.decide(run, decided):
            raise RunError(f"run {run.run_id} is not waiting for approval: another decision was recorded first")
        for gate in decided:
            self._record_approval(run, gate)
        result = self._continue(run)
        self.flush()
        return result

    def _record_approval(self, run: RunRecord, a: ApprovalRecord) -> None:
        self._audit(run, "approval", a.approver or "<deadline>", {
            "gate": a.gate, "requester": a.requester, "approver": a.approver, "outcome": a.status, "role": a.role,
            "requested_at": a.requested_at.isoformat() + "Z",
            "decided_at": a.decided_at.isoformat() + "Z" if a.decided_at else None,
            "deadline": a.deadline_at.isoformat() + "Z" if a.deadline_at else None,
            "note": a.note, "step": a.step, "directory_sha256": self.directory.sha256})

    # --- driving a run ---------------------------------------------------------------

    def _drive(self, wf: Workflow, run: RunRecord, fresh: bool = False) -> RunResult:
        """Run ``run`` from where its journal stands (a ``fresh`` run has none: no reads).

        An exception from the workflow's own code (a bad input item, a bug in a
        step function) fails this run with the message; the batch goes on.
        """
        journal: dict[str, StepRecord] = {} if fresh else {s.step: s for s in self.store.steps(run.run_id)}
        try:
            return self._steps(wf, run, fresh, journal)
        except (RecordError, duckdb.Error):
            raise  # the machinery failed, not the workflow: stop
        except Exception as exc:  # noqa: BLE001 - reported on the run, never as a traceback
            if any(n.startswith(_RECORDING_NOTE) for n in getattr(exc, "__notes__", ())):
                raise  # a bug in recording, not in the workflow: stop, traceback and all
            reason = f"workflow code failed: {type(exc).__name__}: {exc}"
            return self._finish(run, "failed", "failed", reason, (), journal, fresh=fresh)

    def _steps(self, wf: Workflow, run: RunRecord, fresh: bool, journal: dict[str, StepRecord]) -> RunResult:
        approvals = [] if fresh else self.store.approvals(run.run_id)
        ctx = Context(run.run_id, wf.name, run.requested_by, MappingProxyType(run.item()), MappingProxyType({}),
                      frozenset(a.step for a in approvals if a.status == "approved"))
        step_ms: list[float] = []
        for ord_, node in enumerate(wf.nodes):
            group = node.steps if isinstance(node, Parallel) else (node,)
            finals = self._run_group(wf, run, ctx, group, ord_, journal, approvals)
            for step, fin in zip(group, finals):
                if fin.ms is not None:
                    step_ms.append(fin.ms)
                if fin.status == "done":
                    ctx = ctx.with_output(step.name, fin.output or {})
            stop = next((f for f in finals if f.status in ("denied", "failed")), None)
            if stop is not None:
                failed_step = group[finals.index(stop)]
                fb = failed_step.fallback or wf.fallback
                if fb is not None:
                    (fin,) = self._run_group(wf, run, ctx, (fb,), 1000 + ord_, journal, approvals)
                    if fin.ms is not None:
                        step_ms.append(fin.ms)
                    if fin.status == "done":
                        ctx = ctx.with_output(fb.name, fin.output or {})
                status = stop.run_status or ("failed" if stop.status == "failed" else "denied")
                outcome = wf.outcome(ctx) if fb is not None and ctx.ran(fb.name) else status
                return self._finish(run, status, outcome, stop.reason, step_ms, journal, fresh=fresh)
            waiting = next((f for f in finals if f.status == "waiting"), None)
            if waiting is not None:
                return self._finish(run, "waiting_approval", "escalated", waiting.reason, step_ms, journal,
                                    waiting.approval)
        return self._finish(run, "completed", wf.outcome(ctx), None, step_ms, journal, fresh=fresh)

    def _finish(self, run: RunRecord, status: str, outcome: str | None, reason: str | None,
                step_ms: Sequence[float], journal: Mapping[str, StepRecord],
                approval: ApprovalRecord | None = None, fresh: bool = False) -> RunResult:
        steps = sorted(journal.values(), key=lambda s: (s.ord, s.started_at))
        tokens = sum(s.tokens or 0 for s in steps)
        cost = sum(s.cost_usd or 0.0 for s in steps)
        final = replace(run, status=status, outcome=outcome, error=reason, tokens=tokens, cost_usd=cost,
                        updated_at=naive_utc(self.clock()), policy_hash=self.policy.policy_hash)
        self.store.put(final)
        if status in TERMINAL and not fresh:
            # gates still open when the run ends (another gate rejected or expired) are closed
            for a in self.store.approvals(run.run_id):
                if a.status == "pending":
                    self.store.put(replace(a, status="cancelled", decided_at=final.updated_at))
        if self.record_runs:
            again = {"again": self._again[run.run_id]} if run.run_id in self._again else {}
            self._audit(final, "run", run.requested_by, {
                "status": status, "outcome": outcome, "item_id": run.item_id, "reason": reason,
                "tokens": tokens, "cost_usd": cost, "steps": len(steps), **again})
        return self._result(final, step_ms, approval, steps)

    def _result(self, run: RunRecord, step_ms: Sequence[float], approval: ApprovalRecord | None = None,
                steps: Sequence[StepRecord] | None = None) -> RunResult:
        steps = steps if steps is not None else self.store.steps(run.run_id)
        models = tuple(s.model for s in steps if s.model)
        fallbacks = sum(1 for s in steps if s.output and '"fallback_from"' in s.output)
        return RunResult(run.run_id, run.workflow, run.item_id, run.status, run.outcome, run.tokens,
                         run.cost_usd, tuple(step_ms), run.error, approval, models, fallbacks)

    def _run_group(self, wf: Workflow, run: RunRecord, ctx: Context, group: Sequence[Step], ord_: int,
                   journal: dict[str, StepRecord], approvals: Sequence[ApprovalRecord]) -> list[_Final]:
        plans = [self._plan(wf, run, ctx, step, ord_, journal, approvals) for step in group]
        ready = [p for p in plans if isinstance(p, _Ready)]
        effects = [p for p in ready if isinstance(p.step, ToolCall) and p.step.effect]
        if effects:
            # no side effect runs before the decision that allowed it is committed, nor before the records of
            # the steps that led to it: their journal commits with them (or before them), never alone
            self._audit_durable()
        for p in effects:
            self.store.write_intent(run, p.step.name, f"{run.run_id}/{p.step.name}")  # write-ahead
        if len(ready) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="policyengine-step")
            list(self._pool.map(self._perform, ready))
        else:
            for p in ready:
                self._perform(p)
        return [self._record(wf, run, p, journal) if isinstance(p, _Ready) else p for p in plans]

    # --- plan ------------------------------------------------------------------------

    def _request(self, wf: Workflow, run: RunRecord, step: Step, ask: Ask,
                 approvals: Sequence[ApprovalRecord]) -> dict[str, Any]:
        resource: dict[str, Any] = {"kind": ask.kind, "attrs": dict(ask.attrs)}
        if ask.id is not None:
            resource["id"] = ask.id
        context = {"workflow": wf.name, "run_id": run.run_id, "step": step.name, **ask.context}
        request: dict[str, Any] = {"principal": {"id": wf.agent, "type": "agent", "attrs": {"requested_by": run.requested_by}},
                   "action": ask.action, "resource": resource, "data": dict(ask.data), "context": context}
        granted = [{"gate": a.gate, "approver": a.approver, "roles": list(self._roles.get(a.approver or "", ())),
                    "run_id": run.run_id, "ts": (a.decided_at or a.requested_at).isoformat() + "Z"}
                   for a in approvals if a.status == "approved"]
        if granted:
            request["approvals"] = granted
        return request

    def _plan(self, wf: Workflow, run: RunRecord, ctx: Context, step: Step, ord_: int,
              journal: dict[str, StepRecord], approvals: Sequence[ApprovalRecord]) -> _Final | _Ready:
        key = f"{run.run_id}/{step.name}"
        prior = journal.get(step.name)
        if prior is not None and prior.status in ("done", "skipped"):
            return _Final(prior.status, prior.output_dict())
        t0 = time.perf_counter()
        started_at = naive_utc(self.clock())
        if isinstance(step, ToolCall) and step.effect:
            receipt = self.store.effect(key)
            if receipt is not None:  # the effect happened: neither ``when`` nor the policy may undo it now
                return self._replay(wf, run, ctx, step, ord_, receipt, prior, t0, started_at, journal)
        if not step.when(ctx):
            self._put_step(journal, StepRecord(run.run_id, step.name, ord_, step_kind(step), "skipped", key, None,
                                               None, None, None, None, None, None, started_at, started_at))
            return _Final("skipped")
        mine = [a for a in approvals if a.step == step.name]
        ask = step.ask(ctx)
        asked = self._request(wf, run, step, ask, mine)
        request, used = self._versioned(asked)
        decision = self.policy.evaluate(request, now=self.clock(), directory=self._roles)
        if decision.route is not None and decision.route != asked["resource"].get("id"):
            used = self._versioned(self._for_model(asked, decision.route))[1]  # the version of the routed model
        self._audit(run, "decision", wf.agent, _decision_payload(request, decision, step.name, used),
                    decision.policy_hash)
        if decision.obligations or decision.effect != "allow" or decision.route:
            self._budget_alerts(run, wf, decision, ask)

        def journal_row(status: str, reason: str | None = None, output: Any = None) -> StepRecord:
            return StepRecord(run.run_id, step.name, ord_, step_kind(step), status, key,
                              None if output is None else _dumps(output), decision.effect, reason, None, None,
                              None, (time.perf_counter() - t0) * 1000, started_at, naive_utc(self.clock()))

        def stop(status: str, reason: str, run_status: str | None = None, approval: ApprovalRecord | None = None):
            row = journal_row("waiting" if status == "waiting" else status, reason)
            self._put_step(journal, row)
            return _Final(status, None, reason, run_status, approval, row.latency_ms)

        if isinstance(step, RulesDecision):
            out = {"effect": decision.effect, "route": decision.route, "rules": [r.rule for r in decision.reasons]}
            row = journal_row("done", None, out)
            self._put_step(journal, row)
            return _Final("done", out, ms=row.latency_ms)
        if decision.effect == "deny":
            return stop("denied", _reason_text(decision))
        if decision.effect == "escalate":
            needs = [o for o in decision.obligations if isinstance(o, ApprovalRequired)]
            if not needs:
                return stop("denied", "escalation without an approval obligation: " + _reason_text(decision))
            # every gate that matched is opened at once; one denied gate denies the step
            verdicts = [self._gate_state(run, step, next((a for a in mine if a.gate == n.gate), None), n.gate,
                                         n.role, n.deadline_at, n.deadline_seconds, n.on_timeout,
                                         n.distinct_approver, decision) for n in needs]
            denied = next((v for v in verdicts if v is not None and v[0] == "denied"), None)
            waiting = [v for v in verdicts if v is not None and v[0] == "waiting"]
            if denied is not None:
                return stop(*denied)
            if waiting:
                reason = "; ".join(v[1] for v in waiting)
                return stop("waiting", reason, None, waiting[0][3])
        if isinstance(step, HumanWait):
            done = next((a for a in mine if a.status == "approved"), None)
            if done is None:
                own_id = f"{wf.name}.{step.name}"
                own = next((a for a in mine if a.gate == own_id), None)
                verdict = self._gate_state(run, step, own, own_id, step.role, None, step.within_seconds, "deny",
                                           True, decision, own_gate=True, summary=step.summary(ctx))
                if verdict is not None:
                    return stop(*verdict)
                done = own
            out = {"approved_by": done.approver if done else None, "note": done.note if done else None,
                   "gate": done.gate if done else None}
            row = journal_row("done", None, out)
            self._put_step(journal, row)
            return _Final("done", out, ms=row.latency_ms)
        ready = _Ready(step, ord_, ask, request, decision, t0, started_at, ctx, asked=asked)
        if isinstance(step, ToolCall) and step.effect:
            self._put_step(journal, journal_row("started"))
        return ready

    def _replay(self, wf: Workflow, run: RunRecord, ctx: Context, step: ToolCall, ord_: int, receipt: Any,
                prior: StepRecord | None, t0: float, started_at: datetime, journal: dict[str, StepRecord]) -> _Final:
        """Complete a step from its receipt, not asking again: the effect was made under the decision recorded then."""
        output = dict(receipt)
        self._audit(run, "tool_call", wf.agent, {
            "tool": step.ask(ctx).id, "status": "ok", "step": step.name, "error": None,
            "latency_ms": round((time.perf_counter() - t0) * 1000, 3), "replayed": True}, self.policy.policy_hash)
        ms = (time.perf_counter() - t0) * 1000
        self._put_step(journal, StepRecord(run.run_id, step.name, ord_, step_kind(step), "done",
                                           f"{run.run_id}/{step.name}", _dumps(output),
                                           prior.effect if prior is not None else "allow", None, None, None, None,
                                           ms, started_at, naive_utc(self.clock())))
        return _Final("done", output, ms=ms)

    def _gate_state(self, run: RunRecord, step: Step, gate: ApprovalRecord | None, gate_id: str, role: str,
                    deadline_at: str | None, deadline_s: int | None, on_timeout: str, distinct: bool,
                    decision: Decision, *, own_gate: bool = False, summary: str = "") -> tuple | None:
        """``None`` when the step may go ahead; else the ``stop`` arguments (waiting or denied)."""
        if gate is None:
            now = naive_utc(self.clock())
            deadline: datetime | None
            if deadline_at:
                deadline = naive_utc(datetime.fromisoformat(deadline_at))
            else:
                deadline = now + timedelta(seconds=deadline_s) if deadline_s else None
            row = ApprovalRecord(run.run_id, step.name, gate_id, role, run.requested_by, now, deadline, on_timeout,
                                 distinct, "pending", None, summary or None, None)
            self.store.put(row)
            when = f" by {deadline.isoformat(timespec='minutes')}Z" if deadline else ""
            return ("waiting", f"waiting for approval by role {role}{when} (gate {gate_id})", None, row)
        if gate.status == "pending":
            return ("waiting", f"waiting for approval by role {gate.role} (gate {gate.gate})", None, gate)
        if gate.status == "rejected":
            return ("denied", f"rejected by {gate.approver} at gate {gate.gate}", "rejected")
        if gate.status == "expired":
            if gate.on_timeout == "allow":
                return None
            deadline = f" at {gate.deadline_at.isoformat(timespec='minutes')}Z" if gate.deadline_at else ""
            return ("denied", f"approval deadline passed{deadline} at gate {gate.gate} (its else: deny)", "expired")
        if own_gate:
            return None
        return ("denied", f"approval by {gate.approver} does not satisfy gate {gate.gate}: {_reason_text(decision)}")

    # --- perform (may run on a worker thread: no store or audit writes here) ----------

    def _perform(self, p: _Ready) -> None:
        try:
            if isinstance(p.step, ModelCall):
                self._perform_model(p)
            elif isinstance(p.step, ToolCall):
                p.output = dict(p.step.run(p.ctx, f"{p.ctx.run_id}/{p.step.name}"))
            elif isinstance(p.step, DataRead):
                p.output = dict(p.step.read(p.ctx))
        except Exception as exc:  # noqa: BLE001 - a step's own code failed: the run fails with the message
            p.error = f"{type(exc).__name__}: {exc}"

    def _candidates(self, p: _Ready) -> list[str]:
        first = p.decision.route or p.ask.id
        if first is None:
            return []
        out = [first]
        for route in self.policy.policy_set.routes:
            prefer = [n.value for n in route.decl.prefer]
            if first in prefer:
                out += prefer[prefer.index(first) + 1:]
                break
        out += [m for m in p.step.fallback_models if m not in out]  # type: ignore[union-attr]
        return list(dict.fromkeys(out))

    def _perform_model(self, p: _Ready) -> None:
        step: ModelCall = p.step  # type: ignore[assignment]
        prompt = step.prompt(p.ctx)
        key = f"{p.ctx.run_id}/{step.name}"
        models = self.policy.policy_set.models
        previous = None
        for i, model in enumerate(self._candidates(p)):
            if i > 0:
                previous = p.attempts[-1].model if p.attempts else p.refusals[-1][0]
            request, used = self._versioned(self._for_model(p.asked or p.request, model))
            p.model_versions[model] = used
            if i > 0:  # a fallback model must be allowed on its own
                d = self.policy.evaluate(request, now=self.clock(), directory=self._roles)
                p.events.append(("decision", {**_decision_payload(request, d, step.name, used),
                                              "fallback_from": previous}, d.policy_hash))
                if d.effect != "allow":
                    continue
            decl = models.get(model).decl if model in models else None
            hold = self._reserve(model, request, prompt)
            if hold is not None and hold.refused_by is not None:
                p.refusals.append((model, hold.refused_by, hold.refused_unit or ""))
                continue
            try:
                attempts = self.providers.call(model, decl.provider if decl else None, prompt, key)
            except BaseException:
                if hold is not None:
                    release(self.policy.ledger, hold)
                raise
            p.attempts += attempts
            if attempts[-1].status == "ok":
                p.model, p.model_request, p.completion, p.hold = model, request, attempts[-1].completion, hold
                return
            if hold is not None:
                release(self.policy.ledger, hold)  # the call did not happen: give the budget back
        if p.refusals and not p.attempts:
            p.refused = True
            p.error = "; ".join(f"budget {b} has no room for the estimate of a call to {m} ({u})"
                                for m, b, u in p.refusals)
            return
        tried = ", ".join(dict.fromkeys(a.model for a in p.attempts)) or "none allowed"
        p.error = f"every allowed model failed ({tried}): {p.attempts[-1].error if p.attempts else 'no candidate'}"

    def _reserve(self, model: str, request: dict[str, Any], prompt: Any) -> Hold | None:
        """Hold the call's estimate in every budget covering it (None: the ledger takes no reservations)."""
        ledger = self.policy.ledger
        if not can_reserve(ledger):
            return None
        budgets = self.policy.budgets_for(request)
        tokens = estimate_tokens(prompt.text()) + sum(len(label) for label in prompt.labels) // 4 + prompt.max_tokens
        m = self.policy.policy_set.models.get(model)
        price = m.decl.cost_per_1m_tokens if m is not None else None
        cost = tokens * price.amount / 1_000_000 if price is not None else 0.0
        return reserve(ledger, budgets, tokens, cost, "USD", at=self.clock())

    # --- record ----------------------------------------------------------------------

    def _cost(self, model: str, c: Completion) -> float:
        if c.cost_usd is not None:
            return c.cost_usd
        m = self.policy.policy_set.models.get(model)
        price = m.decl.cost_per_1m_tokens if m is not None else None
        return c.tokens * price.amount / 1_000_000 if price is not None else 0.0

    def _record(self, wf: Workflow, run: RunRecord, p: _Ready, journal: dict[str, StepRecord]) -> _Final:
        step = p.step
        key = f"{run.run_id}/{step.name}"
        for event, payload, phash in p.events:
            self._audit(run, event, wf.agent, payload, phash)
        tokens, cost = None, None
        if isinstance(step, ModelCall):
            self._reservation_alerts(run, wf, p)
            subject = step.subject(p.ctx)
            for a in p.attempts:
                ok = a.status == "ok"
                c = a.completion
                out = {"label": c.label, "confidence": c.confidence} if ok and c else {}
                call = {
                    "model": a.model, "provider": a.provider, "tokens": c.tokens if ok and c else 0,
                    "cost_usd": self._cost(a.model, c) if ok and c else 0.0, "latency_ms": round(a.latency_ms, 3),
                    "status": a.status, "error": a.error, "step": step.name, "subject": subject,
                    "outcome": step.outcome(p.ctx, c) if ok and c else "error", "output": out,
                    "label": step.label(p.ctx)}
                if p.model_versions.get(a.model) is not None:
                    call["model_version"] = p.model_versions[a.model]
                self._audit(run, "model_call", wf.agent, call, self.policy.policy_hash)
            if p.completion is not None and p.model is not None:
                tokens, cost = p.completion.tokens, self._cost(p.model, p.completion)
                if p.hold is not None:
                    settle(self.policy.ledger, p.hold, tokens, cost)
                    p.hold = None
                else:
                    self.policy.charge(p.model_request, tokens=tokens, cost=cost, model=p.model, at=self.clock())
                p.output = dict(step.read(p.ctx, p.completion))
                p.output["model"] = p.model
                if p.model_versions.get(p.model) is not None:
                    p.output["model_version"] = p.model_versions[p.model]
                first = p.attempts[0].model
                if p.model != first:
                    p.output["fallback_from"] = first
        elif isinstance(step, ToolCall):
            if step.effect and p.error is None:
                # the receipt is durable before anything else happens
                self.store.write_receipt(EffectRecord(key, run.run_id, step.name, p.ask.id or step.name,
                                                      _dumps(p.output), naive_utc(self.clock())))
                if self.faults is not None:
                    self.faults("after_effect", step.name)
            self._audit(run, "tool_call", wf.agent, {
                "tool": p.ask.id, "status": "error" if p.error else "ok", "step": step.name, "error": p.error,
                "latency_ms": round((time.perf_counter() - p.t0) * 1000, 3), "replayed": False},
                self.policy.policy_hash)
            if step.effect and not self._with_records:
                # the record of the call is durable before the journal may say how the step ended: run state in
                # another database commits first, so a crash between the two left a run completed, paid, and no
                # tool_call on record (with the records, the state commits in their transaction)
                self._audit_durable()
        elif isinstance(step, DataRead):
            self._audit(run, "data_access", wf.agent, {
                "dataset": p.ask.id, "classification": p.ask.data.get("classification"),
                "origin": p.ask.data.get("origin"), "step": step.name,
                "status": "error" if p.error else "ok"}, self.policy.policy_hash)
        ms = (time.perf_counter() - p.t0) * 1000
        status = ("denied" if p.refused else "failed") if p.error else "done"
        row = StepRecord(run.run_id, step.name, p.ord, step_kind(step), status, key,
                         None if p.output is None else _dumps(p.output), p.decision.effect, p.error, p.model,
                         tokens, cost, ms, p.started_at, naive_utc(self.clock()))
        self._put_step(journal, row)
        return _Final(status, p.output, p.error, ms=ms)

    # --- helpers -----------------------------------------------------------------------

    def _versioned(self, request: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The request with the model or agent version it uses resolved (models_registry), and that version."""
        if self.versions is None:
            return request, None
        return self.versions(self.policy, request)

    @staticmethod
    def _for_model(request: dict[str, Any], model: str) -> dict[str, Any]:
        return {**request, "resource": {**request["resource"], "id": model}}

    def _budget_alerts(self, run: RunRecord, wf: Workflow, decision: Decision, ask: Ask) -> None:
        """Record an ``alert`` (kind budget) the first time, per budget and window, that one warns or is exceeded."""
        now = self.clock()
        model = decision.route or ask.id
        for o in decision.obligations:
            if isinstance(o, BudgetWarning):
                key = (o.budget, o.unit, o.window, window_start(o.window, now))
                if key not in self._alerted:
                    self._alerted.add(key)
                    self._audit(run, "alert", wf.agent, {
                        "kind": "budget", "rule": o.budget, "model": model, "metric": f"{o.unit} per {o.window}",
                        "value": o.used, "threshold": o.limit, "breach": False, "action": "alert",
                        "details": {"percent": o.percent, "unit": o.unit, "window": o.window, "warning": True}})
        budgets = {b.id: b for b in self.policy.policy_set.budgets}
        for r in decision.reasons:
            b = budgets.get(r.rule)
            if b is None:
                continue
            key = (r.rule, "exceeded", "day", window_start("day", now))
            if key in self._alerted:
                continue
            self._alerted.add(key)
            action = type(b.decl.on_exceed).__name__.removesuffix("Action").lower() if b.decl.on_exceed else "deny"
            self._audit(run, "alert", wf.agent, {
                "kind": "budget", "rule": r.rule, "model": model, "metric": "limit", "value": None,
                "threshold": None, "breach": True, "action": {"deny": "block", "route": "alert"}.get(action, action),
                "details": {"message": r.message, "on_exceed": action, "effect": decision.effect,
                            "route": decision.route}})

    def _reservation_alerts(self, run: RunRecord, wf: Workflow, p: _Ready) -> None:
        """An ``alert`` (kind budget, breach) the first time per day a budget had no room for a call's estimate."""
        budgets = {b.id: b for b in self.policy.policy_set.budgets}
        for model, budget, unit in p.refusals:
            key = (budget, "exceeded", "day", window_start("day", self.clock()))
            b = budgets.get(budget)
            if key in self._alerted or b is None:
                continue
            self._alerted.add(key)
            action = type(b.decl.on_exceed).__name__.removesuffix("Action").lower() if b.decl.on_exceed else "deny"
            self._audit(run, "alert", wf.agent, {
                "kind": "budget", "rule": budget, "model": model, "metric": "limit", "value": None,
                "threshold": None, "breach": True, "action": "block",
                "details": {"message": f"no room for the call's estimate in {unit}", "on_exceed": action,
                            "effect": "deny", "route": None, "reservation": True}})

    def _put_step(self, journal: dict[str, StepRecord], row: StepRecord) -> None:
        self.store.put(row)
        journal[row.step] = row

    def _audit_durable(self) -> None:
        """Block until every record appended so far is committed (``AuditLog.wait_durable``; else a flush)."""
        try:
            wait = getattr(self.audit, "wait_durable", None)
            if wait is not None and isinstance(self._last_seq, int):
                wait(self._last_seq)
            else:
                self.audit.flush()
        except (AuditError, duckdb.Error) as exc:
            raise RecordError(f"audit log: {exc}") from None

    def _audit(self, run: RunRecord, event: str, actor: str | None, payload: dict[str, Any],
               policy_hash: str | None = None) -> None:
        try:
            self._last_seq = self.audit.append(event, actor=actor, workflow=run.workflow, run_id=run.run_id,
                                               payload=payload, policy_hash=policy_hash or self.policy.policy_hash)
        except (AuditError, duckdb.Error) as exc:  # the log refused the record: nothing runs unrecorded
            raise RecordError(f"audit log: {exc}") from None
        except Exception as exc:
            # a bug (a bad payload, a broken sink), not a refusal: it propagates with its traceback,
            # marked so that ``_drive`` stops instead of failing the run as the workflow's fault
            exc.add_note(f"{_RECORDING_NOTE} {event!r} audit record of run {run.run_id}")
            raise

    def _workflow(self, workflow: str | Workflow) -> Workflow:
        if isinstance(workflow, Workflow):
            return workflow
        wf = self.workflows.get(workflow)
        if wf is None:
            raise RunError(self._missing(workflow))
        return wf

    def _missing(self, workflow: str) -> str:
        problem = getattr(self.workflows, "problem", None)
        if problem is not None:
            return problem(workflow)
        return f"unknown workflow {workflow!r} (known: {', '.join(sorted(self.workflows)) or 'none'})"

    def _continue(self, run: RunRecord) -> RunResult:
        """Drive ``run`` on after a decision was recorded for it.

        Recording an approval, a rejection or an expiry needs no workflow code.
        When the run's workflow is not installed here, the decision stays
        recorded and the run is left ``running`` with the reason, for
        ``runs resume`` (``recover``) where its code is installed.
        """
        wf = self.workflows.get(run.workflow)
        if wf is None:
            why = f"{self._missing(run.workflow)}; resume it where it is installed (policyengine runs resume)"
            left = replace(run, status="running", error=why, updated_at=naive_utc(self.clock()))
            self.store.put(left)
            return self._result(left, ())
        return self._drive(wf, replace(run, status="running"))

    def _run(self, run_id: str, *, exact: bool = False) -> RunRecord:
        return find_run(self.store, run_id, exact=exact)


def find_run(store: RunState, run_id: str, *, exact: bool = False) -> RunRecord:
    """The run ``run_id`` names (id or unique prefix; with ``exact``, the whole id), or ``RunError`` saying why not.

    ``exact`` is for decisions (approve, reject): one typed with a cut or empty
    id (a script's unset variable) must not land on whichever run it prefixes.
    """
    if exact:
        run = store.runs_by_id([run_id]).get(run_id)
        if run is None:
            near = None
            try:
                near = store.run(run_id) if run_id else None
            except LookupError:
                pass
            hint = (f"; a decision names its run by the whole id, e.g. {near.run_id}" if near is not None
                    else " (see `policyengine runs list`)")
            raise RunError(f"no run {run_id!r} in this database{hint}")
        return run
    try:
        run = store.run(run_id)
    except LookupError as exc:
        raise RunError(str(exc)) from None
    if run is None:
        raise RunError(f"no run {run_id!r} in this database (see `policyengine runs list`)")
    return run


__all__ = ["ApprovalRefused", "AuditSink", "Orchestrator", "RecordError", "RunError", "RunResult", "SimulatedCrash",
           "find_run"]
