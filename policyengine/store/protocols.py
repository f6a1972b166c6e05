"""What shared state must do, whatever engine holds it: the typed seams of ``policyengine.store``.

Each protocol has an embedded implementation (DuckDB, one process, the default)
and a PostgreSQL one (many processes and hosts). Callers take a ``Store`` and
never open databases themselves.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..budgets import BudgetLedger as UsageLedger
from ..budgets import Window

if TYPE_CHECKING:
    from ..orchestrator.state import ApprovalRecord, EffectRecord, RunRecord, StepRecord

DEFAULT_RESERVATION_TTL = timedelta(minutes=5)
"""How long an unsettled reservation holds budget before expiry releases it (a crashed caller's hold)."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """Budget held for one call between the decision and the real usage being known."""

    id: str
    scope_key: str
    unit: str
    amount: float
    at: datetime  # UTC: the usage is charged to the windows containing this instant
    expires_at: datetime  # UTC: after this, ``expire`` charges the hold at its estimate and drops it


@runtime_checkable
class BudgetLedger(UsageLedger, Protocol):
    """Usage per scope with reservations, so concurrent callers cannot overspend.

    ``reserve`` admits an estimate only if spent (in ``window``) plus every live
    reservation of the scope plus the estimate stays within ``limit``, atomically
    with respect to every other caller of the same ledger (threads, processes or
    hosts). Spent amounts are kept as running totals per calendar window, so
    reading usage does not scan history.
    """

    def reserve(self, scope_key: str, unit: str, estimate: float, *, limit: float, window: Window = "month",
                at: datetime | None = None, ttl: timedelta = DEFAULT_RESERVATION_TTL) -> Reservation | None:
        """Hold ``estimate``; ``None`` (refused, nothing held) when it would exceed ``limit``."""
        ...

    def settle(self, reservation: Reservation, actual: float) -> None:
        """Charge the real usage and drop the hold. The usage is always recorded: a hold released before is
        charged ``actual`` (the call happened after all), and one ``expire`` charged at its estimate what
        ``actual`` passes that estimate by. PostgreSQL: a hold already settled is not charged again (for a day
        past its deadline), so a settle can be retried; the in-process ledgers charge a second settle again, and
        PostgreSQL one whose hold it has forgotten (when in doubt, charge)."""
        ...

    def release(self, reservation: Reservation) -> None:
        """Drop the hold without charging (the call did not happen)."""
        ...

    def expire(self, now: datetime | None = None) -> int:
        """Charge every hold whose deadline is at or before ``now`` at its estimate and drop it; how many.

        Nobody settled or released such a hold, so its call may have happened (the holder died, or could not
        reach the ledger to settle): charging it keeps spend within the limit (when in doubt, charge)."""
        ...

    def reserved(self, scope_key: str, unit: str) -> float:
        """Total currently held for ``scope_key`` in ``unit`` (live and not yet expired holds)."""
        ...


@dataclass(frozen=True, slots=True)
class QueuedRun:
    """A run waiting for (or held by) a worker."""

    run_id: str
    workflow: str
    input: Mapping[str, Any]
    status: str  # "queued", "running", "waiting" (for an approval), "done", "failed"
    worker: str | None


@runtime_checkable
class RunStore(Protocol):
    """Resumable runs shared by workers: each run is executed by one worker at a time, each effect once."""

    def enqueue(self, run_id: str, workflow: str, input: Mapping[str, Any]) -> None:
        """Add a run to be picked up (a run id already present is left as it is)."""
        ...

    def claim(self, worker: str, limit: int = 1) -> list[QueuedRun]:
        """Take up to ``limit`` queued runs for ``worker``; runs held by other workers are skipped, not waited for."""
        ...

    def record_effect(self, run_id: str, idem_key: str, effect: str, result: Mapping[str, Any]) -> bool:
        """Record a side effect under its idempotency key; False if it was already recorded (do not repeat it)."""
        ...

    def effect(self, idem_key: str) -> Mapping[str, Any] | None:
        """The recorded result of an effect, or None."""
        ...

    def finish(self, run_id: str, worker: str, status: str) -> bool:
        """Mark a run held by ``worker`` done, failed or waiting (paused); False if ``worker`` does not hold it."""
        ...

    def resume(self, run_id: str) -> bool:
        """Queue a waiting run again; True for exactly one caller (an approval resumes its run once)."""
        ...

    def get(self, run_id: str) -> QueuedRun | None:
        ...

    def requeue_abandoned(self, workers_alive: Sequence[str]) -> int:
        """Put runs held by workers not in ``workers_alive`` back in the queue; how many."""
        ...


@dataclass(frozen=True, slots=True)
class PendingApproval:
    run_id: str
    gate: str
    role: str
    requester: str
    deadline: datetime | None
    status: str  # "pending", "approved", "rejected", "expired"
    decided_by: str | None


@runtime_checkable
class ApprovalQueue(Protocol):
    """Approval gates shared by workers: each is decided (or expires) exactly once."""

    def open(self, run_id: str, gate: str, role: str, requester: str, deadline: datetime | None) -> None:
        ...

    def decide(self, run_id: str, gate: str, user: str, approve: bool, at: datetime | None = None) -> bool:
        """Record the decision; False if the gate was already decided or expired (only one caller wins)."""
        ...

    def expire_overdue(self, now: datetime) -> list[PendingApproval]:
        """Mark pending gates past their deadline expired; each is returned by exactly one caller."""
        ...

    def get(self, run_id: str, gate: str) -> PendingApproval | None:
        ...


@runtime_checkable
class BlockList(Protocol):
    """Models suspended from use (by a monitor's ``on breach block``) until a person lifts the block.

    Rows are never deleted: every suspension and who lifted it stays as history.
    """

    def blocked(self) -> frozenset[str]:
        """The models suspended now."""
        ...

    def active(self) -> list[tuple[str, str, str, datetime]]:
        """(model, rule, reason, blocked_at) of every suspended model, by model (the first open block's rule)."""
        ...

    def block(self, model: str, rule: str, reason: str, at: datetime) -> None:
        """Suspend ``model`` because ``rule`` breached (a second breach while blocked adds history only)."""
        ...

    def lift(self, model: str, *, at: datetime, by: str, note: str | None) -> int:
        """Lift every open block of ``model``; how many were open (0: it was not blocked)."""
        ...


@runtime_checkable
class Directory(Protocol):
    """Who holds which roles (user id -> role names)."""

    def roles(self) -> Mapping[str, tuple[str, ...]]:
        ...


class RunState(Protocol):
    """The orchestrator's durable runs, step journal, approvals and effect receipts (what the runner uses).

    Embedded: ``orchestrator.state.StateStore`` (DuckDB, one process holds the
    file). PostgreSQL: ``store.postgres_runs.PostgresStateStore`` (many
    workers; runs are held by one live worker at a time). Writes are buffered
    until ``flush``; reads see buffered rows (both: ``orchestrator.state.BufferedRunState``).
    """

    read_only: bool

    def put(self, *records: RunRecord | StepRecord | ApprovalRecord | EffectRecord) -> None: ...

    def flush(self) -> int: ...

    def write_intent(self, run: RunRecord, step: str, idem_key: str) -> None:
        """Commit the intent of a side effect before it happens (PostgreSQL: only while this worker holds the run)."""
        ...

    def write_receipt(self, receipt: EffectRecord) -> None: ...

    def claim_unfinished(self, workflows: Collection[str]) -> list[RunRecord]:
        """Interrupted runs of ``workflows`` now this process's to drive; [] when none is left."""
        ...

    def claim(self, run: RunRecord) -> bool:
        """Hold ``run`` to drive it; False when another live worker holds it."""
        ...

    def decide(self, run: RunRecord, gates: Collection[ApprovalRecord]) -> bool:
        """Record decided gates of a waiting run and hold it; False when another decider was first."""
        ...

    def run(self, run_id: str) -> RunRecord | None: ...

    def runs(self, status: str | None = None, workflow: str | None = None, limit: int = 50) -> list[RunRecord]: ...

    def runs_by_id(self, run_ids: Collection[str]) -> dict[str, RunRecord]:
        """The runs of exactly these ids in one query, by run id (unknown ids absent; a run known only from an
        intent reads as running): how a re-run of a batch finds the runs its items already have."""
        ...

    def steps(self, run_id: str) -> list[StepRecord]: ...

    def approvals(self, run_id: str) -> list[ApprovalRecord]: ...

    def steps_of_runs(self, run_ids: Collection[str]) -> dict[str, list[StepRecord]]:
        """The step journals of several runs in one query, by run id (a run without steps is absent)."""
        ...

    def approvals_of_runs(self, run_ids: Collection[str]) -> dict[str, list[ApprovalRecord]]:
        """The approval gates of several runs in one query, by run id (a run without gates is absent)."""
        ...

    def overdue(self, now: datetime) -> list[ApprovalRecord]: ...

    def effect(self, idem_key: str) -> dict[str, Any] | None: ...

    def counts(self) -> dict[str, int]: ...

    def abandon(self) -> None:
        """Drop unflushed writes and let go of what this process holds (after a crash, or after ``close``)."""
        ...

    def close(self) -> None: ...
