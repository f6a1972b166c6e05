"""Shadow replay: decide every recorded request again under a candidate policy and report what changes.

``replay`` reads the ``decision`` records of an audit database (read-only: the
log is opened with DuckDB's read-only mode, so nothing is written to it), gives
each recorded request to the candidate policy *at the time it was recorded*,
and compares the candidate's effect and route with the recorded ones. Every
difference is kept (``Change``), counted by transition (``allow -> deny``) and by
the rules that made it (rules named by one decision's reasons and not the
other's), with the first examples of each.

What a replay cannot know is said, not guessed: budgets are decided against an
empty ledger (usage at the time is not replayed), models blocked by a monitor
are not blocked, and requests whose payload was masked when recorded are
decided as masked (``ReplayResult.masked`` counts them).

Because nothing but the request then decides the outcome, DuckDB groups the
records by request (less the per-run fields no rule reads: ``context.run_id``,
``context.step``) and recorded outcome, and each distinct request is decided
once; only the records of groups whose decision changed are read one by one.
The time of a decision counts too when the candidate reads the clock (``age
of``) or the request carries approvals (their age is checked): such records are
grouped by time as well, so a request sent again later is decided at its own time.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from . import ast
from .engine import Policy, load_policy
from .jsonl import reads_age
from .reporting.db import open_readonly, require_audit_log, sql

EXAMPLES_PER_RULE = 3
_BATCH = 20_000


def _open(db: str | Path) -> Any:
    """The log, read-only, without DuckDB's progress bar (it would print into ``--json`` output)."""
    con = open_readonly(db)
    con.execute("SET enable_progress_bar = false")
    return con


def _sql(name: str) -> str:
    return sql(name)  # policyengine/reporting/sql/<name>.sql


@dataclass(frozen=True, slots=True)
class Change:
    """One recorded decision the candidate policy decides differently."""

    seq: int
    ts: datetime
    workflow: str | None
    run_id: str | None
    step: str | None
    principal: str | None
    action: str | None
    resource: str | None
    recorded_effect: str | None
    replayed_effect: str
    recorded_route: str | None
    replayed_route: str | None
    recorded_rules: tuple[str, ...]
    replayed_rules: tuple[str, ...]

    @property
    def transition(self) -> str:
        old = self.recorded_effect or "?"
        if old == self.replayed_effect:  # same effect, another model
            return f"{old} via {self.recorded_route or '-'} -> {self.replayed_route or '-'}"
        return f"{old} -> {self.replayed_effect}"

    @property
    def rules(self) -> tuple[str, ...]:
        """The rules that made the difference: those the candidate's reasons name and the recorded ones did not
        (a rule that now fires); when there are none, those the recorded reasons named and the candidate's do
        not (a rule that no longer fires)."""
        fired = [r for r in self.replayed_rules if r not in self.recorded_rules]
        gone = [r for r in self.recorded_rules if r not in self.replayed_rules]
        return tuple(dict.fromkeys(fired or gone)) or ("<same rules>",)

    def row(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts.isoformat(), "workflow": self.workflow, "run_id": self.run_id,
                "step": self.step, "principal": self.principal, "action": self.action, "resource": self.resource,
                "recorded_effect": self.recorded_effect, "replayed_effect": self.replayed_effect,
                "recorded_route": self.recorded_route, "replayed_route": self.replayed_route,
                "recorded_rules": " ".join(self.recorded_rules), "replayed_rules": " ".join(self.replayed_rules),
                "rules": " ".join(self.rules)}


COLUMNS = tuple(Change.__slots__) + ("rules",)  # the CSV header, in ``Change.row`` order


@dataclass(frozen=True)
class ReplayResult:
    """What a replay found. ``changes`` holds every change, oldest first."""

    db: str
    candidate: tuple[str, ...]
    candidate_hash: str
    since: datetime | None
    until: datetime | None
    replayed: int
    masked: int
    recorded_policies: Mapping[str, int]
    changes: tuple[Change, ...]
    seconds: float
    by_transition: Mapping[str, int] = field(default_factory=dict)
    by_rule: Mapping[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return len(self.changes)

    def examples(self, rule: str, n: int = EXAMPLES_PER_RULE) -> list[Change]:
        return [c for c in self.changes if rule in c.rules][:n]

    def to_dict(self, *, all_changes: bool = True) -> dict[str, Any]:
        return {
            "db": self.db, "candidate": list(self.candidate), "candidate_hash": self.candidate_hash,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "replayed": self.replayed, "changed": self.changed, "masked": self.masked,
            "recorded_policies": dict(self.recorded_policies), "by_transition": dict(self.by_transition),
            "by_rule": dict(self.by_rule), "seconds": round(self.seconds, 3),
            "changes": [c.row() for c in (self.changes if all_changes else self.changes[:0])],
        }


def _resource(request: Mapping[str, Any]) -> str | None:
    r = request.get("resource")
    if not isinstance(r, Mapping):
        return None
    return f"{r.get('kind', '?')} {r.get('id', '(routed)')}"


def _principal(request: Mapping[str, Any]) -> str | None:
    p = request.get("principal")
    return str(p.get("id")) if isinstance(p, Mapping) and p.get("id") is not None else None


def replay(db: str | Path, candidate: Policy | Sequence[str | Path], *, since: datetime | None = None,
           until: datetime | None = None, jobs: int = 1) -> ReplayResult:
    """Replay the decision records of the audit database ``db`` (opened read-only) under ``candidate``.

    Each request is decided with ``now`` set to the time it was recorded, so
    time windows and escalation deadlines behave as they did then. ``jobs`` > 1
    splits a large log into seq ranges decided by that many worker processes
    (each opens the file read-only); the result is the same, in seq order.
    """
    started = time.perf_counter()
    policy = candidate if isinstance(candidate, Policy) else load_policy(list(candidate))
    with _open(db) as con:
        require_audit_log(con, db)
        count, first, last = con.execute(_sql("replay_bounds"), {"since": since, "until": until}).fetchone()
    if jobs > 1 and count >= _PARALLEL_FROM:
        step = (last - first + 1) // (jobs * 4) + 1
        ranges = [(lo, min(lo + step, last)) for lo in range(first - 1, last, step)]
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(_replay_range, *zip(*[(str(db), policy.files, lo, hi, since, until)
                                                         for lo, hi in ranges], strict=True)))
    else:
        parts = [_decide_range(str(db), policy, first - 1, last, since, until)]
    replayed = sum(p[0] for p in parts)
    pending = [c for p in parts for c in p[1]]
    with _open(db) as con:
        recorded = _recorded_rules(con, [c[0] for c in pending])
        counts = con.execute(_sql("replay_counts"), {"since": since, "until": until}).fetchall()
    hashes = {h: n for h, n, _ in counts}
    masked = sum(m for _, _, m in counts)
    changes = tuple(Change(*c[:12], recorded.get(c[0], ()), c[12]) for c in pending)
    by_transition = Counter(c.transition for c in changes)
    by_rule = Counter(r for c in changes for r in c.rules)
    return ReplayResult(db=str(db), candidate=policy.recorded_files, candidate_hash=policy.policy_hash, since=since,
                        until=until, replayed=replayed, masked=masked,
                        recorded_policies=MappingProxyType(hashes), changes=changes,
                        seconds=time.perf_counter() - started,
                        by_transition=MappingProxyType(dict(by_transition.most_common())),
                        by_rule=MappingProxyType(dict(by_rule.most_common())))


_PARALLEL_FROM = 100_000  # fewer decisions than this are not worth starting worker processes


def _replay_range(db: str, files: Sequence[str], after: int, last: int, since: datetime | None,
                  until: datetime | None) -> tuple[int, list[tuple[Any, ...]]]:
    """A worker process's share: load the candidate (its files) and decide seq ``after`` < seq <= ``last``."""
    return _decide_range(db, load_policy(list(files)), after, last, since, until)


def _decide_range(db: str, policy: Policy, after: int, last: int, since: datetime | None,
                  until: datetime | None) -> tuple[int, list[tuple[Any, ...]]]:
    """Decide the recorded requests with seq in (``after``, ``last``]: (how many, the changed ones).

    DuckDB groups the records by request (without the per-run fields no rule reads, see ``_volatile``) and
    recorded outcome, ``_CHUNK`` seqs at a time; each distinct request is decided once (with an empty
    budget ledger nothing but the request decides the effect, the route and the reasons), and only the
    records of groups whose decision changed are read one by one.
    """
    strip = _volatile(policy)
    timed = reads_age(policy)
    cache: dict[str, tuple[str, str | None, tuple[str, ...], str | None, Any, str | None]] = {}
    replayed = 0
    pending: list[tuple[Any, ...]] = []
    with _open(db) as con:
        for lo in range(after, last, _CHUNK):
            window = {"after": lo, "last": min(lo + _CHUNK, last), "since": since, "until": until, "strip": strip,
                      "timed": timed}
            changed: dict[str, tuple[Any, ...]] = {}
            for group, key, effect, route, records, text, first_us in con.execute(_sql("replay_groups"),
                                                                                   window).fetchall():
                seen = cache.get(key) if key is not None else None
                if seen is None:
                    seen = _decide(policy, text, _EPOCH + timedelta(microseconds=first_us))
                    if key is not None:
                        if len(cache) >= _CACHE_SIZE:
                            cache.clear()
                        cache[key] = seen
                if seen[0] != effect or seen[1] != route:
                    changed[group] = (effect, route, seen)
                replayed += records
            if changed:
                members = con.execute(_sql("replay_members"), {**window, "groups": list(changed)}).fetchall()
                for seq, ts_us, workflow, run_id, step, group in members:
                    effect, route, seen = changed[group]
                    pending.append((seq, _EPOCH + timedelta(microseconds=ts_us), workflow, run_id, step, seen[3],
                                    seen[4], seen[5], effect, seen[0], route, seen[1], seen[2]))
    return replayed, pending


_CHUNK = 250_000  # seqs grouped per query: bounds DuckDB's memory on logs of distinct requests
_CACHE_SIZE = 200_000


def _decide(policy: Policy, text: str | None,
            now: datetime) -> tuple[str, str | None, tuple[str, ...], str | None, Any, str | None]:
    """(effect, route, reason rules, principal, action, resource) of one recorded request text."""
    try:
        request = json.loads(text) if text is not None else None
    except ValueError:
        request = None
    if request.__class__ is not dict:
        d = policy.malformed(["the recorded request is not a JSON object"])
        return d.effect, d.route, tuple(r.rule for r in d.reasons), None, None, None
    d = policy.evaluate(request, now=now)
    return (d.effect, d.route, tuple(r.rule for r in d.reasons), _principal(request), request.get("action"),
            _resource(request))


_VOLATILE = ("run_id", "step")  # context fields every workflow request carries, unique per run


def _volatile(policy: Policy) -> str | None:
    """A regular expression (RE2, for DuckDB) matching the per-run fields of a request text, or None when some
    condition of the candidate reads a path ending in one of them (then every request is its own group)."""
    read = {p.parts[-1] if p.parts else p.root for p in ast.attribute_paths(policy.policy_set.expression_roots())}
    names = [n for n in _VOLATILE if n not in read]
    if not names:
        return None
    return '"(?:' + "|".join(names) + ')":"(?:[^"\\\\]|\\\\.)*",?'


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _recorded_rules(con: Any, seqs: list[int]) -> dict[int, tuple[str, ...]]:
    """The rules the recorded reasons of the decisions ``seqs`` named."""
    out: dict[int, tuple[str, ...]] = {}
    query = _sql("replay_reasons")
    for i in range(0, len(seqs), _BATCH):
        for seq, text in con.execute(query, {"seqs": seqs[i:i + _BATCH]}).fetchall():
            rules = json.loads(text) if text else []
            out[seq] = tuple(str(r) for r in rules if r is not None) if isinstance(rules, list) else ()
    return out


__all__ = ["COLUMNS", "Change", "ReplayResult", "replay"]
