"""Open everything a command needs on one DuckDB file, and close it again.

DuckDB lets one process hold a database file for writing, and while it does no
other process can open it. So each CLI command opens the file, works and
closes it; the audit log, the budget ledger and the run state share that one
connection. A second process gets ``SessionError`` with one clear line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import duckdb

from .. import yamlfile
from ..budgets import DuckDBLedger
from ..diagnostics import PolicyError
from ..network import stays_private
from ..resources import data_path
from ..store.files import DEFAULT_DB_PATH, DEFAULT_KEY_PATH, DIRECTORY_NAME, StoreError, beside_database, open_duckdb
from .approvals import Directory
from .ledger import BufferedLedger
from .providers import LocalProvider, ModelProfile, OpenAICompatibleProvider, Providers
from .runner import Orchestrator, SimulatedCrash, find_run
from .state import ApprovalRecord, RunRecord, StateStore, StepRecord, naive_utc, now_utc, sql
from .workflows import registered


class SessionError(Exception):
    """The database, key, rules, directory or provider configuration cannot be used (exit 1)."""


def open_shared_state(state: str, refusal: str) -> Any:
    """The PostgreSQL store ``--state`` names; ``SessionError`` (``refusal`` for any other URL, or the store's one line)."""
    from ..store import open_store
    from ..store.stores import is_postgres_url

    if not is_postgres_url(state):
        raise SessionError(f"--state {state}: {refusal}")
    try:
        return open_store(state)
    except StoreError as exc:
        raise SessionError(str(exc)) from None


def default_rules() -> list[Path]:
    return [data_path("rules")]


def default_directory() -> Path:
    return data_path("data") / "directory.yaml"


def resolved_directory(db: Path) -> Path:
    """The user directory in force for ``db``: the one beside it (``beside_database``), else the shipped one.

    ``StoreError`` when the database has more than one hard link (any of them could be beside a directory).
    """
    beside = beside_database(db, DIRECTORY_NAME)
    return beside if beside.is_file() else default_directory()


from ..audit.masking import mask_path_for, rule_masking  # noqa: E402 - one resolution for every command


def example_mask() -> Path:
    """The shipped masking config ``demo`` copies beside its database."""
    return data_path("data") / "mask.yaml"


@dataclass(frozen=True)
class SessionConfig:
    """Where things are. ``create_key`` makes the signing key when it is missing (``demo``, ``run``).

    ``mask`` is the masking config applied to every audit payload the session
    writes; without one, ``policyengine.mask.yaml`` beside the database is used
    when it exists (see ``resolved_mask``).
    """

    db: Path = DEFAULT_DB_PATH
    key: Path = DEFAULT_KEY_PATH
    rules: Sequence[Path] = field(default_factory=default_rules)
    directory: Path | None = None  # None: the deployment's (``resolved_directory``); set only by library callers
    providers: Path | None = None
    create_key: bool = False
    now: datetime | None = None  # a clock override (tests and drills): recorded as a clock_override event
    mask: Path | None = None
    command: str = "session"  # the command that opened the session, named in clock_override events
    state: str | None = None  # postgresql://...: budgets, runs and approvals shared by workers (None: in ``db``)

    def resolved_mask(self) -> Path | None:
        """The masking config in force: ``mask``, else the one beside the database, else none."""
        found = mask_path_for(self.db, self.mask)
        return Path(found) if found is not None else None

    def key_missing(self) -> bool:
        """No key file, or an empty one (a key being created by another command counts as missing)."""
        return not self.key.exists() or (self.key.is_file() and self.key.stat().st_size == 0)

    def key_problem(self) -> str | None:
        """Why the signing key cannot be used or made, in one line; None when it can.

        A key is only created for a new database: an existing one's audit log is
        signed by its own key, and a fresh key would be refused after the run
        had started, so a missing key beside an existing database is refused first.
        """
        if not self.key_missing():
            return None
        if not self.create_key:
            return f"{self.key}: signing key not found (create one with `policyengine keys generate --out {self.key}`)"
        if self.db.exists():
            return (f"{self.key}: signing key not found, and {self.db} already exists (signed by its own key): "
                    f"pass --key with the key that signed it, or use a new --db")
        return None


def simulator_profiles(policy: Any) -> dict[str, ModelProfile]:
    """Simulated behaviour per registry model: internal, cheap models are less sure than external ones."""
    out = {}
    for name, scoped in policy.policy_set.models.items():
        d = scoped.decl
        big = d.hosting == "external" or (d.cost_per_1m_tokens is not None and d.cost_per_1m_tokens.amount >= 1)
        out[name] = ModelProfile(accuracy=0.95, confidence=0.92) if big else ModelProfile(accuracy=0.88,
                                                                                            confidence=0.86)
    return out


def _endpoint(url: str, where: str) -> str:
    """An endpoint's base URL the API key may be sent to: https, or plain http to loopback only."""
    if not url.startswith(("http://", "https://")):
        raise SessionError(f"{where}: must be an http(s) URL")
    if not stays_private(url):
        raise SessionError(f"{where}: plain http to a host that is not loopback would carry the API key "
                           f"in clear; use https")
    return url


def load_providers(path: Path | None, policy: Any) -> Providers:
    """The providers: simulator profiles from the registry, overridden by a YAML file if given.

    File shape: ``retries``, ``timeout_s``, ``models: {NAME: {accuracy, confidence,
    fail_rate, fail, latency_ms}}`` (simulator), ``providers: {REGISTRY_PROVIDER:
    {base_url, api_key_env}}`` (OpenAI-compatible HTTP endpoints). Without a file,
    ``POLICYENGINE_OPENAI_BASE_URL`` serves models of provider ``openai-compatible``.
    """
    profiles = simulator_profiles(policy)
    doc: dict[str, Any] = {}
    if path is not None:
        try:
            doc = yamlfile.load(path, "provider configuration") or {}
        except yamlfile.YamlFileError as exc:
            raise SessionError(str(exc)) from None
        if not isinstance(doc, dict):
            raise SessionError(f"{path}: provider configuration must be a mapping")
        unknown = sorted(set(doc) - {"retries", "timeout_s", "models", "providers"})
        if unknown:  # a misspelt `providers:` left every model on the simulator, deciding on made-up answers
            raise SessionError(f"{path}: unknown setting {unknown[0]!r} (known: models, providers, retries, timeout_s)")
    fields = set(ModelProfile.__dataclass_fields__)
    for name, spec in (doc.get("models") or {}).items():
        if not isinstance(spec, dict) or not set(spec) <= fields:
            bad = sorted(set(spec) - fields) if isinstance(spec, dict) else spec
            raise SessionError(f"{path}: models.{name}: unknown settings {bad} (known: {', '.join(sorted(fields))})")
        for k, v in spec.items():
            ok = v in ("error", "timeout") if k == "fail" else (
                isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0)
            if not ok:
                want = "error or timeout" if k == "fail" else "a number >= 0"
                raise SessionError(f"{path}: models.{name}.{k}: {v!r} is not {want}")
        profiles[name] = replace(profiles.get(name, ModelProfile()), **spec)
    by_provider: dict[str, Any] = {}
    for pname, spec in (doc.get("providers") or {}).items():
        if not isinstance(spec, dict) or "base_url" not in spec:
            raise SessionError(f"{path}: providers.{pname}: needs a base_url")
        unknown = sorted(set(spec) - {"base_url", "api_key_env"})
        if unknown:
            raise SessionError(f"{path}: providers.{pname}: unknown setting {unknown[0]!r} (known: api_key_env, "
                               f"base_url)")
        by_provider[pname] = OpenAICompatibleProvider(_endpoint(str(spec["base_url"]), f"{path}: providers.{pname}.base_url"),
                                                      str(spec.get("api_key_env", "POLICYENGINE_OPENAI_API_KEY")))
    env_url = os.environ.get("POLICYENGINE_OPENAI_BASE_URL")
    if env_url and "openai-compatible" not in by_provider:
        by_provider["openai-compatible"] = OpenAICompatibleProvider(_endpoint(env_url, "POLICYENGINE_OPENAI_BASE_URL"))
    try:
        retries, timeout = int(doc.get("retries", 1)), float(doc.get("timeout_s", 10.0))
    except (TypeError, ValueError):
        raise SessionError(f"{path}: retries must be an integer and timeout_s a number") from None
    return Providers(default=LocalProvider(profiles), by_provider=by_provider, retries=retries, timeout_s=timeout)


def connect(db: Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open ``db`` (for writing unless ``read_only``), or raise ``SessionError`` naming the process that holds it."""
    if read_only and not Path(db).exists():
        raise SessionError(f"{db}: no such database (runs are recorded by `policyengine run` or `policyengine demo`)")
    try:
        return open_duckdb(db, read_only=read_only, utc=False)
    except StoreError as exc:
        raise SessionError(str(exc)) from None


class Session:
    """An open database with its audit log, ledger, policy, run state and orchestrator."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.conn: duckdb.DuckDBPyConnection | None = None
        self.audit: Any = None
        self.mask: Path | None = None  # the masking config in force, once open
        self._durable: DuckDBLedger | None = None
        self.shared: Any = None  # the PostgreSQL store, with --state
        self.run_state: Any = None  # the runs, journal and approvals the orchestrator drives
        self.orchestrator: Orchestrator

    def __enter__(self) -> Self:
        from ..audit import EVENTS, NO_MASKING, AuditError, AuditLog, generate_key, load_masking, load_private_key

        cfg = self.config
        try:
            directory = Directory.load(cfg.directory if cfg.directory is not None else resolved_directory(cfg.db))
            self.mask = cfg.resolved_mask()
        except (ValueError, StoreError, AuditError) as exc:
            raise SessionError(str(exc)) from None
        try:
            masking = load_masking(self.mask) if self.mask is not None else NO_MASKING
        except AuditError as exc:
            raise SessionError(str(exc)) from None
        problem = cfg.key_problem()
        if problem is not None:
            raise SessionError(problem)
        if cfg.key_missing():
            try:
                generate_key(cfg.key, exist_ok=True)  # another command may be creating it too
            except AuditError as exc:
                raise SessionError(str(exc)) from None
        self.conn = connect(cfg.db)
        try:
            key = load_private_key(cfg.key)
            self.audit = AuditLog(self.conn, key, masking=masking)
            self._record_directory(directory)
            if cfg.now is not None:
                from ..clock import clock_override_payload

                self.audit.append("clock_override", actor=None, workflow=None, run_id=None,
                                  payload=clock_override_payload(cfg.now, cfg.command))
            buffered = None
            if cfg.state is not None:
                self.shared = open_shared_state(cfg.state, "workflow commands share state through "
                                                "postgresql://...; the embedded store is the --db file")
                ledger = self.shared.ledger  # unbuffered: other workers charge the same budgets
            else:
                self._durable = DuckDBLedger(self.conn)
                ledger = buffered = BufferedLedger(self._durable)
            from ..engine import BlockList, load_policy
            from ..reporting.monitor import blocked_models

            # models a bias or drift monitor suspended are denied until unblocked (shared: in the store)
            blocked: Any = BlockList(blocked_models(self.conn))
            if self.shared is not None:
                from ..store.blocklist import LiveBlockList

                try:
                    blocked = LiveBlockList(self.shared.blocks)
                except StoreError as exc:
                    raise SessionError(str(exc)) from None
            policy = load_policy(list(cfg.rules), ledger=ledger, blocked=blocked)
            self.audit.mask_also(rule_masking(policy))  # the rule files' ``mask`` declarations, with the config's
            providers = load_providers(cfg.providers, policy)
            now = cfg.now
            clock = (lambda: now) if now is not None else None
            from ..models_registry import Resolver, history

            versions = Resolver(history(self.conn))  # the aliases as this database's log has them now
            if self.shared is not None:
                from ..store.stores import open_run_state

                try:
                    self.run_state = open_run_state(self.shared)  # runs held by this worker while it lives
                except StoreError as exc:
                    raise SessionError(str(exc)) from None
            else:
                self.run_state = StateStore(self.conn)
            self.orchestrator = Orchestrator(policy, self.run_state, self.audit, workflows=registered(),
                                             providers=providers, directory=directory, ledger=buffered, clock=clock,
                                             record_runs="run" in EVENTS, versions=versions)
        except PolicyError as exc:
            self._abort()
            first = exc.findings[0] if getattr(exc, "findings", None) else None
            raise SessionError(f"rules: {first.headline() if first else exc}") from None
        except AuditError as exc:
            self._abort()
            raise SessionError(str(exc)) from None
        except BaseException:
            self._abort()
            raise
        return self

    def record_policy_loaded(self, actor: str) -> None:
        """Audit which rule files (and policy hash) the runs of this command are decided by."""
        policy = self.orchestrator.policy
        self.audit.append("policy_loaded", actor=actor, workflow=None, run_id=None,
                          payload={"files": list(policy.recorded_files), "rules": len(policy.compiled.rules)},
                          policy_hash=policy.policy_hash)

    def _record_directory(self, directory: Directory) -> None:
        """Audit the user directory when it differs from the last one recorded (``directory_changed``, with hashes)."""
        assert self.conn is not None
        row = self.conn.execute(sql("audit_last_event"), {"event": "directory_changed"}).fetchone()
        previous = json.loads(row[0]).get("sha256") if row else None
        if previous == directory.sha256:
            return
        self.audit.append("directory_changed", actor=None, workflow=None, run_id=None,
                          payload={"source": directory.source, "sha256": directory.sha256,
                                   "previous_sha256": previous, "users": len(directory.users)})

    def _abort(self) -> None:
        """Release the audit writer (its thread and its claim on the file) and the connection; writes nothing."""
        if self.audit is not None:
            try:
                self.audit.abandon()
            finally:
                self.audit = None
        if self.run_state is not None:
            self.run_state.abandon()  # flushed already unless this is a crash; PostgreSQL: the worker lock goes
            self.run_state = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.shared is not None:
            self.shared.close()
            self.shared = None

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        """Flush and close everything; a failure while closing never hides the error that got us here."""
        try:
            if exc_type is None or not issubclass(exc_type, SimulatedCrash):
                try:
                    self.orchestrator.close()
                finally:
                    if self.audit is not None:
                        self.audit.close()
        except Exception as exc:  # noqa: BLE001 - reported as one line, or left behind the first error
            if exc_type is None:
                raise SessionError(f"{self.config.db}: could not close cleanly: {exc}") from None
        finally:
            self._abort()


class RunView:
    """Runs, steps and approvals of a database opened read-only: no signing key, no policy, no writes.

    For auditors and approvers who only look. Expiring an overdue approval is a
    write (an audit record, a resumed run), so it is left to the next writing
    command or ``runs expire``; ``overdue`` tells which pending approvals have
    passed their deadline at ``now``. While another process holds the file for
    writing DuckDB refuses even a read-only open: ``SessionError`` says so.
    """

    def __init__(self, db: Path, now: datetime | None = None, state: str | None = None) -> None:
        self.db = db
        self.now = naive_utc(now) if now is not None else now_utc()
        self.conn: duckdb.DuckDBPyConnection | None = None
        self.state = state  # postgresql://...: the shared run state (``db`` is not opened)
        self.shared: Any = None
        self.store: Any

    @property
    def where(self) -> str:
        """Where the runs are read from, for a title (a URL without its password)."""
        if self.state is None:
            return str(self.db)
        from ..store.postgres import _redact

        return _redact(self.state)

    def __enter__(self) -> Self:
        if self.state is not None:
            from ..store.stores import open_run_state

            self.shared = open_shared_state(self.state, "runs are shared through postgresql://...; "
                                            "the embedded run state is the --db file")
            try:
                self.store = open_run_state(self.shared, read_only=True)
            except StoreError as exc:
                self.shared.close()
                raise SessionError(str(exc)) from None
            return self
        self.conn = connect(self.db, read_only=True)
        try:
            self.store = StateStore(self.conn, read_only=True)
        except duckdb.Error as exc:
            self.conn.close()
            raise SessionError(f"{self.db}: cannot read run state: {str(exc).splitlines()[0]}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.shared is not None:
            self.shared.close()
            self.shared = None

    def runs(self, status: str | None = None, workflow: str | None = None, limit: int = 50) -> list[RunRecord]:
        return self.store.runs(status=status, workflow=workflow, limit=limit)

    def pending(self, run_id: str) -> list[ApprovalRecord]:
        return [a for a in self.store.approvals(run_id) if a.status == "pending"]

    def pending_of_runs(self, run_ids: Collection[str]) -> dict[str, list[ApprovalRecord]]:
        """``pending`` of several runs in one query, by run id (a run with none pending is absent)."""
        pending = {run_id: [a for a in gates if a.status == "pending"]
                   for run_id, gates in self.store.approvals_of_runs(run_ids).items()}
        return {run_id: gates for run_id, gates in pending.items() if gates}

    def show(self, run_id: str) -> tuple[RunRecord, list[StepRecord], list[ApprovalRecord]]:
        run = find_run(self.store, run_id)
        return run, self.store.steps(run.run_id), self.store.approvals(run.run_id)

    def overdue(self, approval: ApprovalRecord) -> bool:
        """Pending with its deadline passed: the next writing command records it as expired."""
        return approval.status == "pending" and approval.deadline_at is not None and approval.deadline_at <= self.now
