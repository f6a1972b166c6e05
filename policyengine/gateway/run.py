"""Start the gateway: load keys, providers and policy, open the audit log and budget ledger, serve with uvicorn.

One process, one audit writer (the decision server's ``DurableAudit``), one
budget ledger (``policyengine.store``'s: a DuckDB file or PostgreSQL with ``ledger``,
else in memory) that every call reserves in before it goes upstream.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..audit import AuditError, AuditLog, generate_key, load_private_key
from ..audit.masking import masking_for
from ..network import is_loopback
from ..schema import named_attributes
from ..server.audit_writer import DurableAudit
from ..server.metrics import Metrics
from ..server.policy_source import PolicyHolder, Refusal, activation_recorder, refusal_recorder, version_recorder
from ..server.run import ServeConfig, _listen, _loop_factory, _serve, open_versions
from .app import GatewayApp
from .limits import MemoryReservingLedger
from .config import (
    GatewayConfig,
    GatewayConfigError,
    check_defaults,
    check_guards_read,
    load_keys,
    load_providers,
)

if TYPE_CHECKING:
    from ..diagnostics import PolicyError


CUT_OFF_GRACE = 10.0  # seconds the calls cancelled by the shutdown have to record and charge themselves


async def _cut_off_calls_finish() -> None:
    """Let the calls uvicorn's shutdown cancelled (past its grace) record and charge themselves: they are
    still running their cleanup when the server returns, and closing the loop would cancel them again, in
    the middle of their charge or their record's durable wait."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=CUT_OFF_GRACE)


class _NoVersions:
    """Without ``--registry`` the gateway reads no model version aliases: nothing to reload, nothing stamped."""

    db = None

    def reload(self, *, force: bool = False, reason: str = "") -> str:
        return "unchanged"


def _key_reloader(app: GatewayApp, path: Path) -> Callable[[str, bool], str | None]:
    """Read ``keys.yaml`` again on SIGHUP or when it changed: a key removed there stops working (401) without a
    restart. A file that does not load keeps the keys read before, and says so."""
    def fingerprint() -> tuple[int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    seen = [fingerprint()]

    def reload(reason: str, force: bool) -> str | None:
        now = fingerprint()
        if not force and now == seen[0]:
            return None
        seen[0] = now
        try:
            keys, teams = load_keys(path)
            check_defaults(keys, named_attributes(app.holder.active.policy.policy_set), path)
        except GatewayConfigError as error:
            return f"keys reload ({reason}) refused: {error}; still using the {len(app.keys)} keys read before"
        app.keys, app.teams = keys, teams  # two reference assignments: a request reads each once
        return f"keys reloaded ({reason}): {len(keys)} keys"

    return reload


_NO_VERSIONS = _NoVersions()


class GatewayStartError(Exception):
    """A setting or file that keeps the gateway from starting (one line)."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _policy_holder(rules: Sequence[str], log: AuditLog, metrics: Metrics, ledger: Any,
                   blocked: Any) -> PolicyHolder:
    """The rules the gateway decides with, read again on change and SIGHUP, recorded as ``serve`` records them.

    Each activation (``policy_activated``) is durable in the log before the policy
    answers a call, and each refusal (``policy_refused``) before it is reported; a
    refusal the log cannot take is refused all the same (the old policy keeps
    answering) and its stderr line says it was not recorded.
    """
    return PolicyHolder(rules=rules, ledger=ledger, blocked=blocked, on_activate=activation_recorder(log, metrics),
                        on_refuse=refusal_recorder(log))


def _signing_key(config: GatewayConfig) -> Any:
    """The key that signs the audit log, created on first start (``AuditError``: one that cannot be read)."""
    if not Path(config.key).exists():
        generate_key(config.key)
        _say(f"created signing key {config.key} (public key {config.key}.pub.pem)")
    return load_private_key(config.key)


def _open_log(config: GatewayConfig, key: Any) -> AuditLog:
    """The audit log of ``config.db`` (``AuditError``: it cannot be opened)."""
    return AuditLog(config.db, key, masking=masking_for(config.db))  # as every writer; rules' masks on activation


def _refused_at_start(config: GatewayConfig, error: PolicyError) -> str:
    """Rules that fail to check at start, refused and recorded as ``policy_refused`` as ``serve`` records them.

    They are checked before anything else is opened, so the log is opened here for that record alone. A key or
    log that cannot be opened leaves the refusal unrecorded: the start is refused all the same, and the first
    line of the outcome (``refused: ...``) says it was not recorded, and why.
    """
    def record(refusal: Refusal) -> None:
        log = _open_log(config, _signing_key(config))
        try:
            refusal_recorder(log)(refusal)  # durable before the gateway says it refused
        finally:
            log.close()

    return PolicyHolder(rules=config.rules, on_refuse=record).refuse("startup", error)


def run_gateway(config: GatewayConfig, *, access_log: bool = True) -> int:
    """Serve until SIGINT/SIGTERM; return the exit status."""
    for name in ("db", "key", "ledger", "rate_limits", "registry", "host"):
        value = getattr(config, name)
        if value is not None and not value.strip():  # an empty ledger was the in-memory one: budgets restarted
            raise GatewayStartError(f"{name}: empty; leave it out for the default")
    try:
        keys, teams = load_keys(Path(config.keys))
        upstreams = load_providers(Path(config.providers) if config.providers else None)
    except GatewayConfigError as error:
        raise GatewayStartError(str(error)) from None
    from ..diagnostics import PolicyError
    from ..engine import load_policy

    try:  # checked before anything else is created or opened (compiled once: the holder's load hits the cache)
        policy = load_policy(list(config.rules))
    except PolicyError as error:
        outcome = _refused_at_start(config, error)  # recorded (or said not to be) before the gateway exits
        raise GatewayStartError("the rules have errors:\n" + outcome.removeprefix("refused: ")) from None
    registry = policy.compiled.registry
    try:
        check_defaults(keys, named_attributes(policy.policy_set), Path(config.keys))
        check_guards_read(config.guards, policy.policy_set)
    except GatewayConfigError as error:
        raise GatewayStartError(str(error)) from None
    for model in upstreams:
        if model not in registry:
            raise GatewayStartError(f"{config.providers}: model {model!r} is not declared in the rules "
                               "(declare it with `model NAME` to route to it)")
    from ..store.files import StoreError
    from ..store.ratelimit import open_rate_limiter

    try:
        limiter = open_rate_limiter(config.rate_limits)
    except StoreError as error:
        raise GatewayStartError(str(error)) from None
    try:
        key = _signing_key(config)
    except AuditError as error:
        raise GatewayStartError(str(error)) from None
    from ..reporting.errors import ReportError
    from ..store.blocklist import serving_blocks
    from ..store.stores import open_serving_state

    versions: Any = None
    if config.registry:  # read before the log opens, as serve does; re-read on change unless it is the log itself
        try:
            versions = open_versions(config.registry, config.db)
        except ReportError as error:
            raise GatewayStartError(f"--registry: {str(error).splitlines()[0]}") from None
    blocked: Any = serving_blocks(config.db)  # not a database: opening the log says so in one line
    store: Any = None
    ledger: Any = MemoryReservingLedger()
    if config.ledger:  # a DuckDB file, or postgresql://... to share budgets between gateway processes and hosts
        try:
            store, blocked = open_serving_state(config.ledger, blocked)
        except StoreError as error:
            raise GatewayStartError(str(error)) from None
        ledger = store.ledger
    try:
        log = _open_log(config, key)
    except AuditError as error:
        if store is not None:
            store.close()
        raise GatewayStartError(str(error)) from None
    if versions is not None:
        versions.on_change = version_recorder(log)  # model_versions_reloaded, durable before the aliases answer
    audit = DurableAudit(log)
    metrics = Metrics(lambda: audit.queue_depth)
    audit.on_commit = metrics.committed
    holder = _policy_holder(config.rules, log, metrics, ledger, blocked)
    app: GatewayApp | None = None
    try:
        outcome = holder.reload("startup", force=True)
        if outcome != "activated":
            raise GatewayStartError(outcome.removeprefix("refused: "))
        app = GatewayApp(holder, audit, metrics, config, keys, teams, upstreams, ledger, limiter,
                         access_log=access_log, versions=versions)
        sock = _listen(config.host, config.port, reuse_port=False)
        serve_config = ServeConfig(rules=config.rules, host=config.host, port=config.port, timeout=config.timeout,
                                   watch_interval=1.0)
        _say(f"gateway: {len(keys)} keys, {len(upstreams)} upstreams, pid {os.getpid()}")
        if not is_loopback(config.host):  # the gateway speaks plain http: its callers' keys are readable on the way
            _say(f"warning: listening on {config.host} over plain http: the virtual keys callers send cross the "
                 f"network in clear; put a TLS proxy in front")
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve(app, holder, versions if versions is not None else _NO_VERSIONS, metrics, sock,
                              serve_config, also=_key_reloader(app, Path(config.keys))))
            runner.run(_cut_off_calls_finish())
            runner.run(app.client.close())
    finally:
        audit.close()
        holder.close()
        if store is not None:
            store.close()
    return 0
