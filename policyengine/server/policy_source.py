"""Where the served policy and its model version aliases come from, and swapping them atomically.

``PolicyHolder.active`` is one reference: a request reads it once and decides
with that policy to the end, so a reload never mixes two policies in one answer.
A reload that fails (unreadable, bad signature, rule errors, a bundle older
than the active one, or any unexpected error) leaves the old policy serving, is
counted as ``refused`` and recorded as ``policy_refused``; a good one is recorded
in the audit log as ``policy_activated`` before it serves its first request.
The first bundle loaded may not be older than the last one the audit log says
was activated (``bundle_history``), unless the operator allows that rollback.
A change the watch sees is loaded only once it has settled: unchanged at the
next check too.

``VersionSource`` does the same for which version each model alias names: the
``model_version`` events of an audit database (``models promote --db``), read
again when that file changes or on SIGHUP; a reload that changes them is
recorded as ``model_versions_reloaded`` before the new aliases answer.

The recorders at the end write those three events; ``serve`` and ``gateway``
both hand them to their holder and version source, so the two record a policy
or alias change with the same payload, made durable the same way.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..audit.errors import AuditError
from ..audit.keys import PublicKey
from ..audit.log import AuditLog, utc_now_text
from ..audit.masking import rule_masking
from ..budgets import BudgetLedger
from ..diagnostics import PolicyError, render_findings
from ..engine import Policy, load_policy
from ..loader import imports_only_inside
from ..models_registry import Change, Resolver, load_resolver
from ..reporting.errors import ReportError
from .bundle_history import LastBundle
from .bundles import BundleError, VerifiedBundle, created_time, verify_bundle

if TYPE_CHECKING:
    from .metrics import Metrics


@dataclass(frozen=True)
class ActivePolicy:
    """The policy being served and what ``GET /v1/policy`` says about it."""

    policy: Policy
    source: str  # "rules" or "bundle"
    files: tuple[str, ...]
    loaded_at: str
    signer: str | None = None  # key id that signed the bundle
    bundle: str | None = None
    bundle_sha256: str | None = None
    bundle_created: str | None = None  # the signed manifest's creation time: a reload may not go back before it
    folder: Path | None = field(default=None, compare=False)  # extracted bundle, removed when replaced
    rollback_from: LastBundle | None = field(default=None, compare=False)  # an allowed start on an older bundle

    @property
    def policy_hash(self) -> str:
        return self.policy.policy_hash

    def describe(self) -> dict[str, Any]:
        return {
            "policy_hash": self.policy_hash,
            "source": self.source,
            "files": list(self.files),
            "rules": len(self.policy.compiled.rules),
            "loaded_at": self.loaded_at,
            "signer": self.signer,
            "bundle": self.bundle,
            "bundle_sha256": self.bundle_sha256,
            "bundle_created": self.bundle_created,
        }


class LoadRefused(Exception):
    """A new policy that may not be served (one line, or the checker's findings).

    ``summary`` is one line for the audit record; ``digest`` and ``signer`` name
    the refused bundle's file and who signed it, where known.
    """

    def __init__(self, message: str, *, summary: str | None = None, digest: str | None = None,
                 signer: str | None = None) -> None:
        super().__init__(message)
        self.summary = summary or (message.splitlines()[0] if message else "")
        self.digest = digest
        self.signer = signer


@dataclass(frozen=True)
class Refusal:
    """A policy refused at start or on reload, and what keeps serving: the ``policy_refused`` audit event."""

    source: str  # "rules" or "bundle"
    bundle: str | None
    bundle_sha256: str | None  # of the file read; None when it could not be read
    signer: str | None  # key id whose signature verified; None when none did
    reason: str  # startup, change or sighup
    refusal: str  # why, in one line
    active: ActivePolicy | None  # what keeps serving (None at startup: nothing does)

    def payload(self) -> dict[str, Any]:
        """The ``policy_refused`` audit payload (docs/audit-events.md)."""
        active = None
        if self.active is not None:
            active = {"policy_hash": self.active.policy_hash, "bundle": self.active.bundle,
                      "bundle_sha256": self.active.bundle_sha256, "bundle_created": self.active.bundle_created,
                      "signer": self.active.signer}
        return {"source": self.source, "bundle": self.bundle, "bundle_sha256": self.bundle_sha256,
                "signer": self.signer, "reason": self.reason, "refusal": self.refusal, "active": active}


def settle_heap() -> None:
    """Collect once and freeze what is left, the served policy included, out of the cyclic GC.

    A full collection walks every object alive: 1.6-2.6 s after loading 100k rules
    (benchmarks/README.md), a pause in some request's path at a moment nobody
    chose. Here it happens once per activation, in the reloading thread, and later
    collections skip the policy. Unfreezing first lets the replaced policy's
    cycles be collected.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _fingerprint_paths(paths: Sequence[str]) -> tuple[tuple[str, int, int], ...]:
    """(file, mtime_ns, size) of every file the paths hold: a changed edit, add or removal changes it."""
    seen: list[tuple[str, int, int]] = []
    for given in map(Path, paths):
        candidates = [given] if given.is_file() else sorted(given.rglob("*")) if given.is_dir() else []
        for path in candidates:
            try:
                stat = path.stat()
            except OSError:
                continue
            if path.is_file():
                seen.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(seen)


class PolicyHolder:
    """Loads the policy from ``rules`` or ``bundle`` and swaps it in on change."""

    def __init__(self, *, rules: Sequence[str] = (), bundle: str | None = None,
                 bundle_key: PublicKey | None = None, ledger: BudgetLedger | None = None,
                 blocked: frozenset[str] = frozenset(),
                 on_activate: Callable[[ActivePolicy, str], None] | None = None,
                 on_refuse: Callable[[Refusal], None] | None = None,
                 last_bundle: LastBundle | None = None, allow_rollback: bool = False,
                 unshared_ledgers: int = 1) -> None:
        if bool(rules) == bool(bundle):
            raise ValueError("serve either --rules or --bundle")
        if bundle and bundle_key is None:
            raise ValueError("--bundle needs --bundle-pubkey")
        self.rules = tuple(rules)
        self.bundle = bundle
        self.bundle_key = bundle_key
        self.ledger = ledger
        self.blocked = blocked  # models a monitor suspended (read from the audit database at start)
        self._on_activate = on_activate
        self._on_refuse = on_refuse  # records each refusal (the old policy keeps serving even if it cannot)
        self.last_bundle = last_bundle  # what the audit log says was activated before this process started
        self.allow_rollback = allow_rollback  # --allow-bundle-rollback: the first load may go below last_bundle
        # processes serving beside this one, each with a budget ledger of its own (--workers N, no --state):
        # a policy with budgets would admit N times every limit, so it is refused
        self.unshared_ledgers = unshared_ledgers
        self._lock = threading.Lock()  # one reload at a time
        self._seen: object = None  # the fingerprint last loaded (or refused)
        self._pending: object = None  # a changed fingerprint seen once, loaded if the next check sees it again
        self.active: ActivePolicy | None = None

    def _fingerprint(self) -> object:
        return _fingerprint_paths([self.bundle] if self.bundle else list(self.rules))

    def _load(self) -> ActivePolicy:
        if self.bundle:
            assert self.bundle_key is not None
            try:
                verified = verify_bundle(self.bundle, self.bundle_key)
            except BundleError as error:
                raise LoadRefused(str(error), digest=error.digest, signer=error.signer) from None
            rollback_from = self._refuse_older(verified)
            folder = verified.extract()
            try:
                with imports_only_inside(folder / "rules"):  # the policy is exactly the signed files
                    policy = load_policy([str(folder / "rules")], ledger=self.ledger, blocked=self.blocked)
            except PolicyError as error:
                shutil.rmtree(folder, ignore_errors=True)
                raise LoadRefused(_bundle_rule_errors(self.bundle, folder, error),
                                  summary=f"{self.bundle}: rule errors: {_first_finding(error)}",
                                  digest=verified.digest, signer=verified.key_id) from None
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            files = tuple(os.path.relpath(f, folder) for f in policy.files)
            return ActivePolicy(policy, "bundle", files, utc_now_text(), verified.key_id, self.bundle,
                                verified.digest, verified.created, folder, rollback_from)
        try:
            policy = load_policy(list(self.rules), ledger=self.ledger, blocked=self.blocked)
        except PolicyError as error:
            raise _rules_refused(error) from None
        return ActivePolicy(policy, "rules", policy.files, utc_now_text())

    def _refuse_older(self, verified: VerifiedBundle) -> LastBundle | None:
        """Refuse a bundle built before the active one: putting an old signed bundle back must not undo a change.

        The first load is held to the last bundle the audit log says was activated,
        so a restart does not forget it; with ``allow_rollback`` it goes through and
        the bundle it goes back from is returned, to be recorded with the activation.
        """
        active = self.active
        if active is not None:
            if active.bundle_created is not None and _older(verified.created, active.bundle_created):
                raise LoadRefused(f"{verified.path}: bundle built at {verified.created} is older than the active "
                                  f"bundle built at {active.bundle_created}; rebuild it to roll back",
                                  digest=verified.digest, signer=verified.key_id)
            return None
        last = self.last_bundle
        if last is None or verified.digest == last.bundle_sha256 or not _older(verified.created, last.bundle_created):
            return None
        if self.allow_rollback:
            return last
        raise LoadRefused(f"{verified.path}: bundle built at {verified.created} is older than the last bundle "
                          f"activated in the audit log ({last.bundle}, sha256 {(last.bundle_sha256 or '?')[:12]}, "
                          f"built at {last.bundle_created}; {last.log} seq {last.seq}); rebuild it to roll back, "
                          f"or start with --allow-bundle-rollback", digest=verified.digest, signer=verified.key_id)

    def reload(self, reason: str, *, force: bool = False) -> str:
        """Load again if the source changed (or ``force``); return ``activated``, ``unchanged``, ``settling``
        or ``refused: why``.

        A change the watch sees is loaded only when the next check finds the same
        fingerprint (``settling`` until then), so a file rewritten in place is not
        activated half-written; ``force`` (startup, SIGHUP) loads at once. Any
        exception of a load or of recording it is a refusal: the old policy keeps serving.
        """
        with self._lock:
            fingerprint = self._fingerprint()
            if not force:
                if fingerprint == self._seen:
                    self._pending = None
                    return "unchanged"
                if fingerprint != self._pending:
                    self._pending = fingerprint
                    return "settling"
            self._pending = None
            self._seen = fingerprint
            try:
                fresh = self._load()
            except LoadRefused as error:
                return self._refused(reason, str(error), error.summary, error.digest, error.signer)
            except Exception as error:  # noqa: BLE001 - whatever it is, the old policy keeps serving
                return self._refused(reason, _one_line(error), _one_line(error), None, None)
            if self.unshared_ledgers > 1 and fresh.policy.compiled.budgets:
                _remove(fresh)
                why = (f"the policy declares budgets, and each of the {self.unshared_ledgers} workers would keep its "
                       f"own ledger and admit {self.unshared_ledgers} times every limit; share one with --state "
                       "postgresql://..., serve with one worker, or pass --ledger-per-worker to accept that")
                return self._refused(reason, why, why, fresh.bundle_sha256, fresh.signer)
            old = self.active
            if old is not None and fresh.policy_hash == old.policy_hash and fresh.signer == old.signer \
                    and fresh.bundle_created == old.bundle_created:
                _remove(fresh)
                return "unchanged"
            if self._on_activate is not None:
                try:
                    self._on_activate(fresh, reason)  # recorded before it serves
                except Exception as error:  # noqa: BLE001 - not recorded: not served
                    _remove(fresh)
                    why = f"cannot record the activation: {_one_line(error)}"
                    return self._refused(reason, why, why, fresh.bundle_sha256, fresh.signer)
            self.active = fresh  # one reference assignment: atomic for every reader
            if old is not None:
                _remove(old)
            del old
            settle_heap()
            return "activated"

    def refuse(self, reason: str, error: PolicyError) -> str:
        """``refused: findings``, recorded and reported as ``reload`` refuses rules with errors, for rules found
        to have them before this holder loaded them (the gateway checks its rules before it opens its log).

        Nothing is loaded again: what is recorded is the error that stopped the start.
        """
        if self.bundle:
            raise ValueError("refuse() takes the errors of --rules")
        refused = _rules_refused(error)
        with self._lock:
            return self._refused(reason, str(refused), refused.summary, None, None)

    def _refused(self, reason: str, message: str, summary: str, digest: str | None, signer: str | None) -> str:
        """``refused: message``, once the refusal is recorded (``on_refuse``).

        A refusal the audit log cannot take is refused all the same (the old
        policy keeps serving); the first line then says it was not recorded.
        """
        outcome = f"refused: {message}"
        if self._on_refuse is None:
            return outcome
        refusal = Refusal("bundle" if self.bundle else "rules", self.bundle, digest, signer, reason,
                          " ".join(summary.split()), self.active)
        try:
            self._on_refuse(refusal)
        except Exception as error:  # noqa: BLE001 - refusing is still right; say it left no record
            first, _, rest = outcome.partition("\n")
            return f"{first} (not recorded in the audit log: {_one_line(error)})" + (f"\n{rest}" if rest else "")
        return outcome

    def close(self) -> None:
        if self.active is not None and self.active.folder is not None:
            shutil.rmtree(self.active.folder, ignore_errors=True)


def _remove(active: ActivePolicy) -> None:
    if active.folder is not None:
        shutil.rmtree(active.folder, ignore_errors=True)


def _older(built: str, than: str | None) -> bool:
    """Whether a bundle ``built`` at that time is older than one built ``than``; a time that does not parse is."""
    built_at, other = created_time(built), created_time(than)
    return built_at is None or other is None or built_at < other


def _first_finding(error: PolicyError) -> str:
    """The checker's findings in one line: the first, and how many more."""
    if not error.findings:
        return "invalid rule files"
    more = len(error.findings) - 1
    return error.findings[0].headline() + (f" (and {more} more)" if more else "")


def _rules_refused(error: PolicyError) -> LoadRefused:
    """Rules with errors, refused: every finding to report, the first (and how many more) to record."""
    return LoadRefused(render_findings(error.findings), summary=f"rule errors: {_first_finding(error)}")


def _one_line(error: BaseException) -> str:
    """An unexpected error as one line: its type and first line."""
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _bundle_rule_errors(bundle: str, folder: Path, error: PolicyError) -> str:
    """Why a verified bundle's rules were refused: one line for an import it does not hold, else every finding."""
    for finding in error.findings:
        if finding.code == "unresolved-import":
            where = os.path.relpath(finding.span.file, folder)
            package = finding.message.rpartition(" ")[2]  # "no file declares package 'x.y'"
            return (f"{bundle}: {where} imports {package}, which the bundle does not hold (a bundle's imports "
                    f"resolve only inside it); rebuild it with that package")
    return f"{bundle}: rule errors:\n{render_findings(error.findings)}"


class VersionSource:
    """``source(policy, request)`` resolves versions with the aliases last read from ``db`` (``models_registry``).

    ``live``: another process may change ``db`` (``models promote --db``), so
    ``reload`` reads it again when it changed. Not live when it is the log this
    server writes: DuckDB then lets no other process write it, so it is read once.
    A read that fails (the file is being written, or is gone) keeps the aliases
    read before and is tried again at the next check.
    """

    def __init__(self, db: str | Path, *, live: bool, resolver: Resolver | None = None) -> None:
        self.db = Path(db)
        self.live = live
        # called with each reload that changes the aliases, before they answer (the server records it)
        self.on_change: Callable[[VersionReload], None] | None = None
        self._lock = threading.Lock()
        self._seen: object = self._fingerprint() if live else None
        self.active: Resolver = resolver if resolver is not None else load_resolver(self.db)  # ReportError: not one

    def __call__(self, policy: Any, request: Any) -> tuple[Any, str | None]:
        return self.active(policy, request)  # one reference: a reload never mixes two alias tables in one answer

    def _fingerprint(self) -> object:
        return _fingerprint_paths([str(self.db), f"{self.db}.wal"])

    def reload(self, *, force: bool = False, reason: str = "change") -> str:
        """``changed: what``, ``unchanged`` or ``refused: why`` (the aliases read before stay in force).

        ``on_change`` runs before the swap: if recording fails, the old aliases stay (fail closed) and the
        next check tries again.
        """
        if not self.live:
            return "unchanged"
        with self._lock:
            fingerprint = self._fingerprint()
            if not force and fingerprint == self._seen:
                return "unchanged"
            old = self.active.changes
            if old and not self.db.is_file():
                return f"refused: {self.db} is gone"
            try:
                fresh = load_resolver(self.db)
            except ReportError as error:
                return f"refused: {str(error).splitlines()[0]}"
            if fresh.changes == old:
                self._seen = fingerprint
                return "unchanged"
            added = _added(old, fresh.changes)
            if self.on_change is not None:
                try:
                    self.on_change(VersionReload(self.db, reason, added))  # recorded before the new aliases answer
                except AuditError as error:
                    return f"refused: cannot record the reload in the audit log: {str(error).splitlines()[0]}"
            self._seen = fingerprint
            self.active = fresh
            return "changed: " + _changes_text(added)


@dataclass(frozen=True)
class VersionReload:
    """A reload of ``registry`` that changed the aliases: the ``model_version`` changes it read that were new."""

    registry: Path
    reason: str  # change (the file watch) or sighup
    added: tuple[Change, ...]

    def payload(self) -> dict[str, Any]:
        """The ``model_versions_reloaded`` audit payload (docs/audit-events.md)."""
        return {"registry": str(self.registry), "reason": self.reason, "changes": [c.row() for c in self.added]}


def _added(old: tuple[Change, ...], new: tuple[Change, ...]) -> tuple[Change, ...]:
    """The changes ``new`` adds to ``old`` (or, when it does not extend it, the last one)."""
    return new[len(old):] if new[:len(old)] == old else new[-1:]


def _changes_text(added: tuple[Change, ...]) -> str:
    """``added`` in one line."""
    if not added:
        return "no changes recorded any more (every alias names its first declared version)"
    return "; ".join(f"{c.change} {c.name} {c.alias} {c.previous} -> {c.version} by {c.by}" for c in added)


# --- the audit records of these changes: serve and gateway write them with the same code ------------------

def activation_recorder(log: AuditLog, metrics: Metrics) -> Callable[[ActivePolicy, str], None]:
    """``PolicyHolder``'s ``on_activate``: record ``policy_activated``, durable before the policy answers anything.

    From then on the log also masks what the activated rules declare (``mask``).
    """
    def record(active: ActivePolicy, reason: str) -> None:
        log.mask_also(rule_masking(active.policy))  # the activated rules' ``mask`` declarations, from now on
        payload = {**active.describe(), "reason": reason}
        rollback = active.rollback_from
        if rollback is not None:  # --allow-bundle-rollback let it go below the last activated bundle
            payload["rollback_from"] = rollback.describe()
        seq = log.append("policy_activated", payload=payload, policy_hash=active.policy_hash)
        log.wait_durable(seq)  # recorded before the policy answers anything
        metrics.reloads.labels("activated").inc()
        print(f"policy {active.policy_hash[:12]} activated ({reason}; {active.source}"
              f"{', signed by ' + active.signer if active.signer else ''}"
              f"{'; rolled back from the bundle built at ' + str(rollback.bundle_created) if rollback else ''}"
              f"; audit seq {seq})", file=sys.stderr, flush=True)
    return record


def refusal_recorder(log: AuditLog) -> Callable[[Refusal], None]:
    """``PolicyHolder``'s ``on_refuse``: record each refused policy as ``policy_refused``, durable before the
    refusal is reported (an ``AuditError`` here: the refusal stands, and says it was not recorded)."""
    def record(refusal: Refusal) -> None:
        active = refusal.active.policy_hash if refusal.active is not None else None
        log.wait_durable(log.append("policy_refused", payload=refusal.payload(), policy_hash=active))
    return record


def version_recorder(log: AuditLog) -> Callable[[VersionReload], None]:
    """``VersionSource.on_change``: record each alias reload as ``model_versions_reloaded``, durable before the
    new aliases answer."""
    def record(reload: VersionReload) -> None:
        log.wait_durable(log.append("model_versions_reloaded", payload=reload.payload()))
    return record
