"""The monitor: evaluate every ``bias`` and ``drift`` rule over the audit log.

For each rule it computes the metric over the rule's window from the rule's
model's ``model_call`` events (the same SQL as the offline reports), compares it
with the threshold, and returns a ``MonitorResult``. ``record`` then writes each
result as an audit ``alert`` event (through a sink the caller supplies, normally
the signed audit log) and applies ``on breach``: ``alert`` only records,
``escalate`` records the alert with the role to escalate to (for the approvals
queue), ``block`` suspends the model in ``model_blocks`` until
``policyengine models unblock MODEL``. The engine reads the suspended models with
``blocked_models(db)`` and denies them.

A rule that cannot be evaluated (no calls in a window, a path no call has, an
undefined metric, fewer than two groups judged, groups or positive outcomes that are one name
written differently) gives a result with ``error``
and ``value`` None: it is no breach, but no reading either; it opens nothing
and closes nothing (``report open_escalations``), and ``monitor
--fail-on-breach`` fails on it.

Windows: a bias rule looks at ``[now - window, now)`` (default 30 days). A drift
rule ``baseline previous D`` compares the current period ``[now - D, now)`` with
the baseline period before it, ``[now - 2D, now - D)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import duckdb

from .. import ast
from .audit_source import bias_from_audit, drift_from_audit
from .bias import spelled_alike
from ..store.blocklist import active_blocks as _active_blocks
from ..store.blocklist import EmbeddedBlockList, has_blocks_table
from ..store.blocklist import blocked_models as _blocked_models
from ..audit.errors import AuditError
from ..audit.masking import masking_for
from ..store.files import StoreError
from ..store.protocols import BlockList
from .db import check_db_path, has_table, open_readonly, open_readwrite, require_audit_log
from .errors import ReportError
from .thresholds import holds

DEFAULT_WINDOW = timedelta(days=30)
_BIAS_METRICS = {
    "disparate_impact": "disparate_impact",
    "demographic_parity": "demographic_parity_difference",
    "demographic_parity_difference": "demographic_parity_difference",
    "demographic_parity_ratio": "demographic_parity_ratio",
    "equalized_odds": "equalized_odds_difference",
    "equalized_odds_difference": "equalized_odds_difference",
    "equalized_odds_ratio": "equalized_odds_ratio",
}

Action = Literal["alert", "block", "escalate"]
# Records one audit ``alert`` payload (docs/audit-events.md); the caller signs and stores it.
AlertSink = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class MonitorResult:
    """One bias or drift rule evaluated at one moment."""

    kind: Literal["bias", "drift"]
    rule: str
    model: str
    metric: str
    value: float | None  # None: undefined or not computable (see ``error`` / details notes)
    threshold: str  # as written: ">= 0.8"
    breach: bool
    action: Action  # what ``on breach`` says; taken only when ``breach``
    escalate_to: str | None
    window_start: datetime
    window_end: datetime
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # why the rule could not be evaluated (no data, bad path, undefined, one group, ...)

    @property
    def evaluated(self) -> bool:
        """Whether the metric was measured and compared: a result that was not is no sign of health."""
        return self.error is None

    def alert_payload(self) -> dict[str, Any]:
        """The audit ``alert`` payload of this result (docs/audit-events.md)."""
        details = {**self.details, "window_start": self.window_start.isoformat(),
                   "window_end": self.window_end.isoformat()}
        if self.escalate_to:
            details["escalate_to_role"] = self.escalate_to
        if self.error:
            details["error"] = self.error
        return {"kind": self.kind, "rule": self.rule, "model": self.model, "metric": self.metric,
                "value": self.value, "threshold": self.threshold, "breach": self.breach,
                "action": self.action, "details": details}


def _action(on_breach: Any) -> tuple[Action, str | None]:
    if isinstance(on_breach, ast.BlockAction):
        return "block", None
    if isinstance(on_breach, ast.EscalateAction):
        return "escalate", on_breach.role.value
    return "alert", None


def _threshold(t: ast.Threshold) -> str:
    return f"{t.op} {t.value:g}"


def _breaches(value: float | None, t: ast.Threshold) -> bool:
    """The threshold states the healthy condition; a defined value outside it is a breach."""
    return value is not None and not holds(value, t.op, t.value)


def positive_values(expr: ast.Expr) -> list[str]:
    """Outcome values a bias rule counts as positive: ``outcome == "x"``, ``outcome in [...]``, ``or``."""
    def text(lit: ast.Expr) -> str:
        if not isinstance(lit, ast.Literal):
            raise ReportError("the positive outcome must be compared with literal values")
        v = lit.value
        return ("true" if v else "false") if isinstance(v, bool) else str(v)

    if isinstance(expr, ast.Or):
        return [v for item in expr.items for v in positive_values(item)]
    if isinstance(expr, ast.Compare) and isinstance(expr.left, ast.Path) and expr.left.dotted == "outcome":
        if expr.op == "==":
            return [text(expr.right)]
        if expr.op == "in" and isinstance(expr.right, ast.ListExpr):
            return [text(i) for i in expr.right.items]
    raise ReportError('bias rules can count a positive outcome as `outcome == "x"` or `outcome in [...]`')


def evaluate_bias(con: duckdb.DuckDBPyConnection, rule_id: str, decl: ast.BiasDecl, now: datetime) -> MonitorResult:
    window = timedelta(seconds=decl.window.seconds) if decl.window else DEFAULT_WINDOW
    start, action = now - window, _action(decl.on_breach)
    base = {"kind": "bias", "rule": rule_id, "model": decl.model.value, "metric": decl.metric.value,
                "threshold": _threshold(decl.threshold), "action": action[0], "escalate_to": action[1],
                "window_start": start, "window_end": now}
    try:
        key = _BIAS_METRICS.get(decl.metric.value)
        if key is None:
            raise ReportError(f"unknown bias metric {decl.metric.value!r}")
        r = bias_from_audit(con, model=decl.model.value, group=decl.group_by.dotted,
                            positives=positive_values(decl.positive), start=start, end=now,
                            min_samples=decl.min_samples or 0)
    except ReportError as e:
        return MonitorResult(value=None, breach=False, error=str(e), **base)  # type: ignore[arg-type]
    value = getattr(r, key)
    details = {"groups": {g.group: {"n": g.n, "selection_rate": g.selection_rate, "judged": g.judged,
                                    "impact_ratio": g.impact_ratio} for g in r.groups},
               "reference_group": r.reference_group, "min_samples": r.min_samples,
               "decisions": r.total_rows, "notes": list(r.notes)}
    if r.positives_spelled_otherwise:  # their calls counted as not selected: the rates are not the model's
        shown = ", ".join(ascii(v) for v in r.positives_spelled_otherwise)
        error = (f"outcome(s) {shown} are a positive value of the rule written differently: counted as not "
                 "selected, the selection rates would not be the model's")
        return MonitorResult(value=None, breach=False, details=details, error=error, **base)  # type: ignore[arg-type]
    alike = spelled_alike([g.group for g in r.groups])
    if alike:  # one group split between spellings: neither part's rate is the group's, a part may go unjudged
        shown = "; ".join(", ".join(ascii(n) for n in names) for names in alike)
        error = (f"groups written differently are one name ({shown}): counted apart they split one group's "
                 f"calls, so {decl.group_by.dotted} must be written one way")
        return MonitorResult(value=None, breach=False, details=details, error=error, **base)  # type: ignore[arg-type]
    if r.judged_groups < 2:  # one group's 'ratio 1, difference 0' compares it with nothing: no reading
        shown = f"min samples {r.min_samples}" if r.min_samples else "groups"
        error = (f"{r.judged_groups} group(s) judged ({shown}: "
                 + ", ".join(f"{g.group} n={g.n}" for g in r.groups[:10])
                 + "): bias needs two groups to compare")
        return MonitorResult(value=None, breach=False, details=details, error=error, **base)  # type: ignore[arg-type]
    return _judged(value, decl.threshold, details, base)


def evaluate_drift(con: duckdb.DuckDBPyConnection, rule_id: str, decl: ast.DriftDecl, now: datetime) -> MonitorResult:
    baseline = timedelta(seconds=decl.baseline.seconds)
    split, start, action = now - baseline, now - 2 * baseline, _action(decl.on_breach)
    base = {"kind": "drift", "rule": rule_id, "model": decl.model.value, "metric": decl.metric.value,
                "threshold": _threshold(decl.threshold), "action": action[0], "escalate_to": action[1],
                "window_start": split, "window_end": now}
    try:
        r = drift_from_audit(con, model=decl.model.value, path=decl.of.dotted, start=start, split=split,
                             end=now, metric=decl.metric.value)
        value = r.metric(decl.metric.value)
    except ReportError as e:
        return MonitorResult(value=None, breach=False, error=str(e), **base)  # type: ignore[arg-type]
    details = {"column": decl.of.dotted, "kind": r.kind, "baseline_start": start.isoformat(),
               "n_reference": r.n_reference, "n_current": r.n_current, "psi": r.psi,
               "ks": r.ks.statistic if r.ks else None, "chi2_pvalue": r.chi2.pvalue if r.chi2 else None,
               "notes": list(r.notes)}
    return _judged(value, decl.threshold, details, base)


def _judged(value: float | None, threshold: ast.Threshold, details: dict[str, Any],
            base: dict[str, Any]) -> MonitorResult:
    """The result of a computed metric; one that is undefined or not a finite number was not evaluated (``error``)."""
    if value is None or not math.isfinite(value):
        notes = details.get("notes") or []
        why = "; ".join(notes[:3]) if notes else "no reason given"
        return MonitorResult(value=None, breach=False, details=details,  # type: ignore[arg-type]
                             error=f"{base['metric']} is undefined ({why})", **base)
    return MonitorResult(value=value, breach=_breaches(value, threshold), details=details, **base)  # type: ignore[arg-type]


def evaluate_all(con: duckdb.DuckDBPyConnection, policy_set: Any, now: datetime | None = None) -> tuple[MonitorResult, ...]:
    """Evaluate every bias and drift rule of ``policy_set`` on the audit log held by ``con``."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if not has_table(con, "audit_log"):
        raise ReportError("the database has no audit_log table (is this a policyengine audit database?)")
    results = [evaluate_bias(con, s.id, s.decl, now) for s in policy_set.biases]
    results += [evaluate_drift(con, s.id, s.decl, now) for s in policy_set.drifts]
    return tuple(results)


def record(blocks: BlockList | duckdb.DuckDBPyConnection, results: Iterable[MonitorResult], sink: AlertSink | None,
           now: datetime | None = None) -> tuple[str, ...]:
    """Record every result through ``sink`` and apply ``block``; returns the models newly blocked.

    ``blocks`` is the store's block list (a connection: the embedded one in that database).
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if isinstance(blocks, duckdb.DuckDBPyConnection):
        blocks = EmbeddedBlockList(blocks)
    try:
        already = blocks.blocked()
    except Exception as error:  # noqa: BLE001 - any store's failure: nothing was recorded or blocked yet
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ReportError(f"cannot read the block list: {first}; nothing was recorded, run the monitor again") from None
    blocked: list[str] = []
    for r in results:
        if r.breach and r.action == "block":  # in force before its alert is signed: no signed block that is not
            reason = f"{r.metric} {r.value:.6g} breaches {r.threshold}"
            try:
                blocks.block(r.model, r.rule, reason, now)
            except Exception as error:  # noqa: BLE001 - any store's failure: the block did not happen
                first = str(error).splitlines()[0] if str(error) else type(error).__name__
                raise ReportError(f"cannot block {r.model} ({r.rule} breached): {first}; its alert and those after "
                                  "it were not recorded, run the monitor again") from None
            if r.model not in already and r.model not in blocked:
                blocked.append(r.model)
        if sink is not None:
            sink(r.alert_payload())
    return tuple(blocked)


def shared_blocks(state: str | None) -> Any:
    """The store holding the block list when it is shared (``postgresql://...``), else None (blocks live in --db)."""
    if state is None:
        return None
    from ..store import open_store
    from ..store.stores import is_postgres_url

    if not is_postgres_url(state):
        raise ReportError(f"--state {state}: the block list is shared through postgresql://...; "
                          "the embedded store's is in --db")
    try:
        return open_store(state)
    except StoreError as e:
        raise ReportError(str(e)) from None


def run_monitor(db: str | Path, policy: Any, *, key: str | Path | None = None, now: datetime | None = None,
                record_results: bool = True, clock_override: bool = False,
                state: str | None = None) -> tuple[tuple[MonitorResult, ...], tuple[str, ...]]:
    """Evaluate ``policy``'s bias and drift rules on ``db``, record and act; (results, newly blocked models).

    With ``key`` each result is signed into the audit log as an ``alert`` event by
    the audit writer, on the same connection (DuckDB allows one writer per file).
    With ``record_results=False`` the database is only read: no alert, no block.
    With ``state`` (``postgresql://...``) blocks go to the shared block list every
    worker reads, instead of ``model_blocks`` in ``db``.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)  # one instant: the alerts' window_end is the blocks' blocked_at
    if not record_results:
        con = open_readonly(db)
        try:
            require_audit_log(con, db)
            return evaluate_all(con, policy.policy_set, now), ()
        finally:
            con.close()
    store = shared_blocks(state)
    try:
        con = open_readwrite(db)
    except BaseException:
        if store is not None:
            store.close()
        raise
    try:
        require_audit_log(con, db)
        results = evaluate_all(con, policy.policy_set, now)
        log = _audit_writer(con, key, db, policy)
        sink: AlertSink | None = None
        if log is not None:
            if clock_override and now is not None:
                from ..clock import clock_override_payload

                log.append("clock_override", actor="monitor", payload=clock_override_payload(now, "monitor"))

            def sink(payload: dict[str, Any]) -> None:
                log.append("alert", actor="monitor", payload=payload, policy_hash=policy.policy_hash)
        try:
            blocked = record(store.blocks if store is not None else con, results, sink, now)
        finally:
            if log is not None:
                try:
                    log.close()
                except AuditError as e:  # alerts appended but not written: said in one line, never taken as kept
                    raise ReportError(str(e)) from None
    finally:
        con.close()
        if store is not None:
            store.close()
    return results, blocked


def _audit_writer(con: duckdb.DuckDBPyConnection, key: str | Path | None, db: str | Path,
                  policy: Any = None) -> Any:
    """The signed audit log on ``con`` (``policyengine.audit.AuditLog``), or None without a key.

    It masks as every writing command does: ``policyengine.mask.yaml`` beside ``db``,
    and the ``mask`` declarations of ``policy``'s rule files.
    """
    if key is None:
        return None
    from ..audit import AuditError, AuditLog, load_private_key

    try:
        return AuditLog(con, load_private_key(key), masking=masking_for(db, policy=policy))
    except AuditError as e:
        raise ReportError(str(e)) from None


# --- the block list the engine reads ---------------------------------------------------------


def blocked_models(db: str | Path | duckdb.DuckDBPyConnection) -> frozenset[str]:
    """Models suspended by a monitor in ``db`` (the block list lives in ``policyengine.store.blocklist``)."""
    try:
        return _blocked_models(db)
    except StoreError as e:
        raise ReportError(str(e)) from None


def active_blocks(db: str | Path, state: str | None = None) -> list[tuple[str, str, str, datetime]]:
    """(model, rule, reason, blocked_at) of every suspended model (in ``db``, or the shared store ``state``)."""
    store = shared_blocks(state)
    if store is not None:
        try:
            return store.blocks.active()
        except StoreError as e:
            raise ReportError(str(e)) from None
        finally:
            store.close()
    check_db_path(db)
    try:
        return _active_blocks(db)
    except StoreError as e:
        raise ReportError(str(e)) from None


def unblock(db: str | Path, model: str, *, by: str, key: str | Path, note: str | None = None,
            state: str | None = None) -> int:
    """Lift every open block of ``model``; a ``ReportError`` if it is not blocked.

    The lift is signed into the audit log of ``db`` with ``key`` as a
    ``model_unblocked`` event (``model``, ``rules``, ``by``, ``note``;
    docs/audit-events.md), durably, before the block list changes: a lift the
    log does not show is how a quietly re-enabled model looks, so there is no
    unrecorded lift. With ``state`` (``postgresql://...``) the block is lifted in
    the shared block list; ``db`` is then opened only to sign the event.
    """
    store = shared_blocks(state)
    con = None
    try:
        con = open_readwrite(db)
        if store is not None:
            blocks: Any = store.blocks
        else:
            if not has_blocks_table(con):
                raise ReportError(f"model {model!r} is not blocked (no model has ever been blocked in {db})")
            blocks = EmbeddedBlockList(con)
        active = blocks.active()
        open_blocks = [r for r in active if r[0] == model]
        if not open_blocks:
            shown = ", ".join(r[0] for r in active) or "none"
            raise ReportError(f"model {model!r} is not blocked (blocked now: {shown})")
        rules = sorted({r[1] for r in open_blocks})
        payload = {"model": model, "rules": rules, "by": by, "note": note, "lifted": len(open_blocks)}
        kept = masking_for(db).apply(payload)  # the block list keeps what the log signs: no dropped note in clear
        log = _audit_writer(con, key, db)  # before the lift: a bad key changes nothing
        try:
            log.append("model_unblocked", actor=by, payload=payload)
            log.flush()  # signed and durable first: a crash after it leaves the block, never a silent lift
            lifted = blocks.lift(model, at=datetime.now(UTC), by=str(kept.get("by") or "(masked)"),
                                 note=kept.get("note"))
        finally:
            log.close()
        return int(lifted)
    except StoreError as e:
        raise ReportError(str(e)) from None
    except (AuditError, duckdb.Error) as e:  # a full disk, an I/O error: nothing was lifted unrecorded
        raise ReportError(f"{db}: cannot record the lift ({str(e).splitlines()[0]}); the block stays") from None
    finally:
        if con is not None:
            con.close()
        if store is not None:
            store.close()
