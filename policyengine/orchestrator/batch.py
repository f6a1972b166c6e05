"""A batch re-run finds the runs its items already have, so running the same input again repeats no side effect.

Each item's run id is derived from (workflow, item key, ``again`` label). The
item key is the item's declared id (``Workflow.item_id``: the ``id`` field
unless the workflow says otherwise) or, for an item without one, the SHA-256 of
its canonical JSON (RFC 8785). A side effect's idempotency key is
``run_id/step``, so an item keeps its key in every run of the same input, and a
tool that honours the key deduplicates even a call the run state never learnt of.

Before anything runs, every item's run is looked up in one query
(``RunState.runs_by_id``): a run that ended or waits for a person is reported,
not run again; a run a crash interrupted is driven on from its journal, as
``runs resume`` does (receipts honoured, finished steps restored); only an item
without a run starts one. Running an item again on purpose takes an ``again``
label, which is part of the identity (so that re-run can itself be re-run after
a crash without repeating it) and is recorded (``rerun_requested``, and
``again`` in each such run's ``run`` record).
"""

from __future__ import annotations

import hashlib
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import duckdb

from ..audit.canonical import CanonicalJSONError, canonical_bytes
from ..audit.errors import AuditError
from ..identity import name_fold
from .approvals import ApprovalRefused
from .runner import RecordError, RunError, RunResult, _requester
from .state import RunRecord
from .workflow import Workflow

if TYPE_CHECKING:
    from .runner import Orchestrator

_SHOWN = 20  # duplicate items named in a refusal, as load_items names bad values
_LABEL_MAX = 200


@dataclass(frozen=True, slots=True)
class Planned:
    """One input item with its identity: the key it is known by and the id of its run."""

    item: Mapping[str, Any]
    key: str
    run_id: str


def item_key(wf: Workflow, item: Mapping[str, Any]) -> str:
    """The item's identity within ``wf``: ``id:`` and its declared id, else ``sha256:`` of its canonical JSON."""
    try:
        declared = wf.item_id(item)
    except Exception:  # noqa: BLE001 - an item whose id cannot be read is known by its content
        declared = ""
    if declared:
        return f"id:{declared}"
    try:
        return "sha256:" + hashlib.sha256(canonical_bytes(dict(item))).hexdigest()
    except CanonicalJSONError as exc:
        raise RunError(f"an item without an id has no exact JSON form to know it by: {exc}") from None


def run_id_of(workflow: str, key: str, again: str | None = None) -> str:
    """The id of the run of item ``key`` in ``workflow`` (of its re-run ``again``): the same for the same input.

    80 bits of SHA-256: ids stay short, and a batch finding a run of another
    item under its id (never seen, and checked) is refused, not run.
    """
    return "r-" + hashlib.sha256(canonical_bytes([workflow, key, again])).hexdigest()[:20]


def again_label(text: str) -> str:
    """An ``again`` label as recorded: trimmed, non-empty, printable, at most 200 characters (``RunError``)."""
    label = unicodedata.normalize("NFC", text).strip()
    if not label:
        raise RunError("--again needs a label naming this re-run (e.g. --again 2026-12-corrected-amounts)")
    if len(label) > _LABEL_MAX:
        raise RunError(f"--again label is {len(label)} characters long; at most {_LABEL_MAX}")
    bad = next((c for c in label if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")), None)
    if bad is not None:
        raise RunError(f"--again label holds the invisible or control character U+{ord(bad):04X}")
    return label


def plan(wf: Workflow, items: Iterable[Mapping[str, Any]], again: str | None = None) -> list[Planned]:
    """Each item with its key and run id; ``RunError`` naming them when items of one input are the same item.

    Two items with one identity would be one run: the second would silently
    report the first's result, so the input is refused before any run starts.
    So are two items whose ids only look alike (``INV-1``, ``inv-1``,
    ``INV-1<U+200B>``): they would be two runs, each paying under its own
    idempotency key.
    """
    label = again_label(again) if again is not None else None
    planned, first, repeats = [], {}, []
    alike: dict[str, tuple[int, str]] = {}  # declared ids as they read (name_fold) -> the first item so written
    for n, item in enumerate(items, 1):
        key = item_key(wf, item)
        if key in first:
            repeats.append(f"item {n} is the same item as item {first[key]} ({_shown(key)})")
        elif key.startswith("id:"):
            # two runs with two idempotency keys: a tool could not tell they pay one invoice
            m, other = alike.setdefault(name_fold(key[3:]), (n, key))
            if other != key:
                repeats.append(f"item {n} ({_shown(key)}) reads as item {m} ({_shown(other)}): the ids differ only "
                               f"in case, width, spaces or invisible characters")
        first.setdefault(key, n)
        try:
            planned.append(Planned(item, key, run_id_of(wf.name, key, label)))
        except CanonicalJSONError as exc:  # an id no JSON text holds exactly (a lone surrogate)
            raise RunError(f"item {n}: its {_shown(key)} cannot be recorded: {exc}") from None
    if repeats:
        more = len(repeats) - _SHOWN
        raise RunError("; ".join(repeats[:_SHOWN]) + (f"; ... and {more} more" if more > 0 else "")
                       + ": each item runs once per input (remove the repeats, or give distinct items distinct "
                       "ids); no run was started")
    return planned


def _shown(key: str) -> str:
    kind, _, value = key.partition(":")
    return f"id {value!r}" if kind == "id" else f"same content, sha256 {value[:12]}"


def run_batch(orch: Orchestrator, workflow: str | Workflow, items: Iterable[Mapping[str, Any]], *,
              requested_by: str, on_result: Callable[[RunResult], None] | None = None,
              again: str | None = None) -> list[RunResult]:
    """Run each item once per identity: earlier runs are reported or resumed, never started again.

    Refused before anything runs (``RunError``) when items repeat, or when an
    unfinished earlier run was started under other rules (``runs resume
    --migrate-policy`` moves it first).
    """
    wf = orch._workflow(workflow)
    who = _requester(requested_by)
    planned = plan(wf, items, again)
    label = again_label(again) if again is not None else None
    earlier = orch.store.runs_by_id([p.run_id for p in planned])
    for p in planned:
        run = earlier.get(p.run_id)
        if run is not None and (run.workflow != wf.name or item_key(wf, run.item()) != p.key):
            raise RunError(f"run {run.run_id} holds another item than item {_shown(p.key)} of {wf.name} (a run id "
                           f"collision); no run was started")
    unfinished = [run for run in earlier.values() if run.status == "running"]
    try:
        orch._under_current_policy(unfinished, False, None, "resume")
    except ApprovalRefused as exc:
        raise RunError(f"{exc}; this input has an unfinished run from before: finish it first with `policyengine "
                       f"runs resume` (no run of this input was started)") from None
    ended = [run.run_id for run in earlier.values() if run.status != "running"]
    journals = orch.store.steps_of_runs(ended)
    gates = orch.store.approvals_of_runs([r for r in ended if earlier[r].status == "waiting_approval"])
    batch_id = f"b-{uuid.uuid4().hex[:10]}"
    if label is not None:  # the input's first runs, which this re-run repeats, are counted for the record
        first = orch.store.runs_by_id([run_id_of(wf.name, p.key) for p in planned])
        _record_rerun(orch, wf, who, {"label": label, "by": who, "batch_id": batch_id, "items": len(planned),
                                      "first_runs": len(first),
                                      "already_run": sum(p.run_id in earlier for p in planned)})
        orch._again.update((p.run_id, label) for p in planned)

    def drive(p: Planned) -> RunResult:
        run = earlier.get(p.run_id)
        if run is None:
            return orch._start(wf, p.item, requested_by=who, batch_id=batch_id, run_id=p.run_id)
        result = _found(orch, wf, run, journals.get(run.run_id, []), gates.get(run.run_id, []))
        return replace(result, differs=run.item() != dict(p.item))

    return orch._collect(map(drive, planned), on_result)


def _record_rerun(orch: Orchestrator, wf: Workflow, who: str, payload: dict[str, Any]) -> None:
    """Audit an intentional re-run before any of its runs (``rerun_requested``): who asked, under which label."""
    try:
        orch.audit.append("rerun_requested", actor=who, workflow=wf.name, run_id=None,
                          payload={"workflow": wf.name, **payload}, policy_hash=orch.policy.policy_hash)
    except (AuditError, duckdb.Error) as exc:  # as the runner's own records: nothing runs unrecorded
        raise RecordError(f"audit log: {exc}") from None


def _found(orch: Orchestrator, wf: Workflow, run: RunRecord, steps: Sequence[Any], gates: Sequence[Any]) -> RunResult:
    """The result for an item whose run exists: driven on if a crash interrupted it, else as it stands."""
    if run.status == "running":
        if not orch.store.claim(run):  # shared state: another live worker is driving it now
            return replace(orch._result(run, (), None, steps), earlier="held")
        return replace(orch._drive(wf, run), earlier="resumed")
    pending = next((g for g in gates if g.status == "pending"), None)
    return replace(orch._result(run, (), pending, steps),
                   earlier="waiting" if run.status == "waiting_approval" else "done")


__all__ = ["Planned", "again_label", "item_key", "plan", "run_batch", "run_id_of"]
