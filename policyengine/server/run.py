"""Start the decision service: open the log, load the policy, serve with uvicorn (uvloop + httptools).

One process serves with one audit writer. ``workers > 1`` starts that many
processes on one port (SO_REUSEPORT, the kernel spreads connections); DuckDB
lets one process write a file, so worker ``i`` writes its own audit segment
``DB.worker<i>.duckdb`` (each a complete signed log that ``audit verify`` checks); with
``--roll-*`` each worker rolls its own series ``DB.worker<i>.NNNNNN.duckdb`` (``audit verify --dir``).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..audit import DEFAULT_DB_PATH, AuditError, AuditLog, load_private_key, load_public_key
from ..audit.keys import DEFAULT_KEY_PATH
from ..audit.masking import masking_for
from ..audit.segments import worker_db_path
from ..budgets import BudgetLedger
from ..network import is_loopback
from ..store.holds import MemoryReservingLedger
from ..store.stores import is_postgres_url
from .app import DecisionApp, ServerOptions
from .audit_writer import DurableAudit
from .metrics import Metrics
from .bundle_history import LastBundle, last_bundle
from .policy_source import PolicyHolder, activation_recorder, refusal_recorder, version_recorder


class ServeError(Exception):
    """A setting or file that keeps the server from starting (one line)."""


@dataclass(frozen=True)
class ServeConfig:
    rules: tuple[str, ...] = ()
    bundle: str | None = None
    bundle_pubkey: str | None = None
    allow_bundle_rollback: bool = False  # start on a bundle older than the last one the audit log activated
    db: str = str(DEFAULT_DB_PATH)
    key: str = str(DEFAULT_KEY_PATH)
    ledger: str | None = None
    host: str = "127.0.0.1"
    port: int = 8181
    workers: int = 1
    ledger_per_worker: bool = False  # --workers N with budgets and no shared state: accepted, N ledgers
    auth_token_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    client_ca: str | None = None
    max_body: int = 1 << 20
    timeout: float = 10.0  # seconds: a body must arrive within it; idle keep-alive connections close after it
    access_log: bool = True
    otel: bool = False
    watch_interval: float = 1.0  # seconds between checks of the rule files or bundle (0: only on SIGHUP)
    shadow: tuple[str, ...] = ()  # candidate rule files decided beside the live policy (server/shadow.py)
    registry: str | None = None  # audit database whose model_version events name the aliases (default: db)
    inbox: str | None = None  # runs database whose approver inbox is mounted at /inbox
    inbox_key: str | None = None  # the key that signs that database's audit log (default: ``key``)
    directory: str | None = None  # user directory (YAML) approvers' roles come from; none: approvals are refused
    worker: int | None = None  # set in a worker process
    history: LastBundle | None = None  # set in a worker process: the last activated bundle, read by the supervisor
    roll_records: int | None = None  # roll the audit log into segments (audit/segments.py) ...
    roll_bytes: int | None = None  # ... by records, bytes on disk
    roll_age: float | None = None  # ... or age in seconds


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _read_token(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ServeError(f"{path}: cannot read the auth token ({error.strerror or error})") from None
    if not token or any(c.isspace() for c in token):
        raise ServeError(f"{path}: the auth token must be one non-empty word")
    return token


def _tracer(enabled: bool) -> Any:
    """A tracer for ``--otel``: spans go to OTLP when that exporter is installed, else as JSON to stderr."""
    if not enabled:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        raise ServeError("--otel needs the opentelemetry-sdk package (pip install 'policyengine[otel]')") from None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        exporter: Any = OTLPSpanExporter()  # configured by the OTEL_EXPORTER_OTLP_* variables
    except ImportError:
        exporter = ConsoleSpanExporter(out=sys.stderr)
    provider = TracerProvider(resource=Resource.create({"service.name": "policyengine"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return trace.get_tracer("policyengine.server")


def _check_tls(config: ServeConfig) -> None:
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ServeError("give both --tls-cert and --tls-key")
    if config.client_ca and not config.tls_cert:
        raise ServeError("--client-ca (mTLS) needs --tls-cert and --tls-key")
    for path in (config.tls_cert, config.tls_key, config.client_ca):
        if path and not Path(path).is_file():
            raise ServeError(f"{path}: no such file")
    if config.client_ca:  # read here, before the log opens, not first by uvicorn after "listening on"
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(config.client_ca)
        except (ssl.SSLError, OSError, ValueError) as error:
            raise ServeError(f"--client-ca {config.client_ca}: no CA certificate can be read from it "
                             f"({getattr(error, 'reason', None) or error})") from None


def _listen(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _last_bundle(config: ServeConfig) -> LastBundle | None:
    """What the audit log says was the last bundle activated (read before the log is opened), or None.

    Read from every file of ``--db`` (each worker's, rolled or not), not only the one this process writes.
    """
    if not config.bundle:
        return None
    from ..reporting.errors import ReportError

    try:
        return last_bundle(config.db)
    except ReportError as error:  # not knowing what was served before, it does not start
        raise ServeError(f"{error} (reading the last activated bundle)") from None


def open_versions(registry: str, writes: str | None) -> Any:
    """The ``VersionSource`` of ``registry``, re-read on change unless it is ``writes`` (the log this process holds).

    ``serve`` and ``gateway --registry`` both open theirs here. ``ReportError``: not an audit database.
    """
    from .policy_source import VersionSource

    live = writes is None or Path(registry).resolve() != Path(writes).resolve()
    return VersionSource(registry, live=live)


def _versions_and_shadow(config: ServeConfig, writes: str | None) -> tuple[Any, Any]:
    """The model version aliases (read before the log opens) and the ``--shadow`` candidate.

    The aliases come from ``--registry``, else from the main ``--db`` (not a
    worker's segment); they are re-read on change unless that is ``writes``,
    the file this process holds (no other process can change it then).
    """
    from ..diagnostics import PolicyError
    from ..models_registry import Resolver
    from ..reporting.errors import ReportError
    from .policy_source import VersionSource
    from .shadow import Shadow

    registry = config.registry or config.db
    try:
        versions = open_versions(registry, writes)
    except ReportError as error:
        if config.registry:
            raise ServeError(f"--registry: {error}") from None
        versions = VersionSource(registry, live=False, resolver=Resolver())  # opening the log says why, in one line
    if not config.shadow:
        return versions, None
    try:
        return versions, Shadow.load(config.shadow)
    except PolicyError as error:
        first = error.findings[0].headline() if error.findings else "invalid rule files"
        raise ServeError(f"--shadow: {first}") from None


def serve(config: ServeConfig) -> int:
    """Run until SIGINT/SIGTERM; return the exit status."""
    if config.inbox and config.workers > 1:
        raise ServeError("--inbox keeps its sign-in sessions in one process: use it with --workers 1")
    if config.worker is None and not is_loopback(config.host):
        if not config.auth_token_file and not config.client_ca:
            _say(f"warning: listening on {config.host} with neither --auth-token-file nor --client-ca: anyone who "
                 f"reaches the port may ask for decisions and charge budgets")
        elif not config.tls_cert:
            _say(f"warning: listening on {config.host} over plain http: the bearer token of --auth-token-file "
                 f"crosses the network in clear; give --tls-cert and --tls-key, or put a TLS proxy in front")
    if config.workers > 1 and config.worker is None:
        return _supervise(config)
    _check_tls(config)
    token = _read_token(config.auth_token_file) if config.auth_token_file else None
    tracer = _tracer(config.otel)
    inbox = _inbox(config)  # refused before the log is opened
    directory, approver_keys = _directory(config.directory)
    db = config.db if config.worker is None else str(worker_db_path(config.db, config.worker))
    bundle_key = None
    if config.bundle:
        if not config.bundle_pubkey:
            raise ServeError("--bundle needs --bundle-pubkey PEM (the key that signs bundles)")
        try:
            bundle_key = load_public_key(config.bundle_pubkey)
        except AuditError as error:
            raise ServeError(str(error)) from None
    try:
        key = load_private_key(config.key)
    except AuditError as error:
        raise ServeError(f"{error} (the audit signing key; create one with `policyengine keys generate`)") from None
    from ..store import StoreError
    from ..store.blocklist import serving_blocks
    from ..store.stores import open_serving_state

    blocked: Any = serving_blocks(db)  # not a database: opening the log says so in one line
    ledger: BudgetLedger = MemoryReservingLedger()  # takes /v1/reserve's holds, as the store's ledgers do
    store = None
    if config.ledger:  # a DuckDB file (one process) or postgresql://... (every worker and host)
        try:
            store, blocked = open_serving_state(config.ledger, blocked)
        except StoreError as error:
            raise ServeError(f"{config.ledger}: cannot open budget ledger: {error}") from None
        ledger = store.ledger
    rolled = config.roll_records is not None or config.roll_bytes is not None or config.roll_age is not None
    versions, shadow = _versions_and_shadow(config, None if rolled else db)
    # a worker does not read the files of --db itself: the other workers may hold theirs open already
    last = config.history if config.worker is not None else _last_bundle(config)
    try:
        log = _open_log(config, db, key)
    except AuditError as error:
        raise ServeError(str(error)) from None
    versions.on_change = version_recorder(log)
    audit = DurableAudit(log)
    metrics = Metrics(lambda: audit.queue_depth)
    audit.on_commit = metrics.committed
    holder = PolicyHolder(rules=config.rules, bundle=config.bundle, bundle_key=bundle_key, ledger=ledger,
                          blocked=blocked, on_activate=activation_recorder(log, metrics),
                          on_refuse=refusal_recorder(log), last_bundle=last,
                          allow_rollback=config.allow_bundle_rollback,
                          unshared_ledgers=config.workers if store is None and not config.ledger_per_worker else 1)
    sock = None
    try:
        sock = _listen(config.host, config.port, reuse_port=config.worker is not None)  # before any audit record
        outcome = holder.reload("startup", force=True)
        if outcome != "activated":
            raise ServeError(outcome.removeprefix("refused: "))
        options = ServerOptions(auth_token=token, max_body=config.max_body, body_timeout=config.timeout,
                                access_log=config.access_log, tracer=tracer, tls=bool(config.tls_cert),
                                model_versions=versions, shadow=shadow, inbox=inbox, directory=directory,
                                approver_keys=approver_keys, token_key=key)
        app = DecisionApp(holder, audit, metrics, options)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve(app, holder, versions, metrics, sock, config))
    finally:
        if sock is not None:
            sock.close()
        audit.close()
        holder.close()
        if store is not None:
            store.close()
    return 0


def _open_log(config: ServeConfig, db: str, key: Any) -> Any:
    """The audit writer: one file, or (``--roll-*``) a series of segments ``<db stem>.NNNNNN.duckdb`` beside ``db``."""
    masking = masking_for(db)  # policyengine.mask.yaml beside it, as every writer
    if config.roll_records is None and config.roll_bytes is None and config.roll_age is None:
        return AuditLog(db, key, masking=masking)
    from ..audit.segments import RollPolicy, SegmentedLog

    roll = RollPolicy(records=config.roll_records, bytes=config.roll_bytes, age=config.roll_age)
    path = Path(db)
    return SegmentedLog(path.parent, path.stem, key, roll=roll, masking=masking,
                        on_roll=lambda old, new: _say(f"audit segment {old} sealed; writing {new}"))


def _inbox(config: ServeConfig) -> Any:
    """The approver inbox of ``--inbox RUNS_DB`` (or of ``--state``'s runs), mounted at /inbox, or None."""
    if not config.inbox:
        return None
    from .inbox import InboxConfig, InboxError, make_inbox

    if config.bundle:
        raise ServeError("--inbox decides runs under the rules they were started with: give --rules, not --bundle")
    if Path(config.inbox).resolve() == Path(config.db).resolve():
        raise ServeError(f"--inbox {config.inbox}: that is the decision log --db, which this server holds open; "
                         f"give the runs database (`policyengine run --db`)")
    from ..store.stores import is_postgres_url

    # With --state postgresql://... the runs of every worker are there, and --inbox names the file the
    # inbox signs its decisions into (as `inbox serve --state`); else --inbox is the runs database itself.
    state = config.ledger if is_postgres_url(config.ledger) else None
    try:
        return make_inbox(InboxConfig(db=Path(config.inbox), key=Path(config.inbox_key or config.key),
                                      rules=tuple(Path(r) for r in config.rules), prefix="/inbox",
                                      secure_cookie=bool(config.tls_cert), state=state))
    except InboxError as error:
        raise ServeError(f"--inbox: {error}") from None


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; the stock loop still works
        return None
    return uvloop.new_event_loop


async def _serve(app: DecisionApp, holder: PolicyHolder, versions: Any, metrics: Metrics, sock: socket.socket,
                 config: ServeConfig, also: Callable[[str, bool], str | None] | None = None) -> None:
    import uvicorn

    loop = asyncio.get_running_loop()
    ssl_options: dict[str, Any] = {}
    if config.tls_cert:
        ssl_options = {"ssl_certfile": config.tls_cert, "ssl_keyfile": config.tls_key}
        if config.client_ca:
            ssl_options |= {"ssl_ca_certs": config.client_ca, "ssl_cert_reqs": ssl.CERT_REQUIRED}
    class _Server(uvicorn.Server):
        """uvicorn's server without its signal capture (it re-raises SIGTERM after shutdown, skipping our close)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

    server = _Server(uvicorn.Config(
        app, http="httptools", lifespan="off", log_level="warning", access_log=False, server_header=False,
        date_header=False, timeout_keep_alive=max(1, int(config.timeout)), timeout_graceful_shutdown=5,
        **ssl_options,
    ))
    busy = asyncio.Lock()
    refused_before: list[str | None] = [None]

    settling: list[bool] = [False]

    async def reload(reason: str, force: bool) -> None:
        """Reload the policy, then the model versions; any exception is a refusal, so the watch never stops."""
        async with busy:
            try:
                outcome = await loop.run_in_executor(None, lambda: holder.reload(reason, force=force))
            except Exception as error:  # noqa: BLE001 - PolicyHolder.reload refuses what it knows; this is the rest
                outcome = f"refused: {type(error).__name__}: {error}"
        if outcome == "settling" and not settling[0]:
            _say(f"policy source changed ({reason}); activating it once unchanged at the next check")
        settling[0] = outcome == "settling"
        if outcome.startswith("refused"):
            metrics.reloads.labels("refused").inc()
            _say(f"policy reload ({reason}) {outcome.splitlines()[0]}; still serving "
                 f"{holder.active.policy_hash[:12] if holder.active else 'nothing'}")
        async with busy:
            try:
                changed = await loop.run_in_executor(None, lambda: versions.reload(force=force, reason=reason))
            except Exception as error:  # noqa: BLE001 - the aliases read before stay in force
                changed = f"refused: {type(error).__name__}: {error}".splitlines()[0]
        if changed != "unchanged" and changed != refused_before[0]:
            _say(f"model versions ({reason}; {versions.db}) {changed}"
                 + ("; still using the aliases read before" if changed.startswith("refused") else ""))
        refused_before[0] = changed if changed.startswith("refused") else None  # say a refusal once, not every check
        if also is not None:  # what else the app reads from files (the gateway's keys)
            async with busy:
                try:
                    said = await loop.run_in_executor(None, lambda: also(reason, force))
                except Exception as error:  # noqa: BLE001 - what was read before stays in force
                    said = f"reload ({reason}) refused: {type(error).__name__}: {error}".splitlines()[0]
            if said:
                _say(said)

    async def watch() -> None:
        while config.watch_interval > 0:
            await asyncio.sleep(config.watch_interval)
            try:
                await reload("change", False)
            except Exception as error:  # noqa: BLE001 - a watch that dies would leave a stale policy serving
                metrics.reloads.labels("refused").inc()
                _say(f"policy reload (change) refused: {type(error).__name__}: {error}".splitlines()[0])

    def shut_down() -> None:
        server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, shut_down)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload("sighup", True)))
    watcher = loop.create_task(watch())
    host, port = sock.getsockname()[:2]
    scheme = "https" if config.tls_cert else "http"
    where = getattr(app.audit.log, "where", None) or app.audit.log._where  # a segmented log names its series
    _say(f"listening on {scheme}://{host}:{port} (audit {where}, pid {os.getpid()})")
    try:
        await server.serve(sockets=[sock])
    finally:
        watcher.cancel()
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def _worker(config: ServeConfig) -> None:
    try:
        sys.exit(serve(config))
    except ServeError as error:
        _say(f"error: worker {config.worker}: {error}")
        sys.exit(1)


def _directory(path: str | None) -> tuple[Mapping[str, Sequence[str]] | None, Mapping[str, Any]]:
    """``--directory FILE``: approver id -> roles, and -> public key (who can sign approvals), read once at start
    by the orchestrator's loader."""
    if path is None:
        return None, {}
    from ..orchestrator.approvals import Directory

    try:
        directory = Directory.load(path)
    except ValueError as error:  # the loader names the file and the problem
        raise ServeError(str(error)) from None
    return directory.roles(), directory.public_keys()


def _supervise(config: ServeConfig) -> int:
    """Start ``workers`` processes on one port; pass SIGTERM/SIGINT/SIGHUP on; exit when all have."""
    if config.port == 0:
        raise ServeError("--workers needs a fixed --port (each worker binds it with SO_REUSEPORT)")
    if config.ledger and not is_postgres_url(config.ledger):
        raise ServeError("--ledger takes one writing process: use it with --workers 1 (or --state postgresql://...)")
    _listen(config.host, config.port, reuse_port=True).close()  # fail here, once, if the port is taken
    history = _last_bundle(config)  # read before any worker opens its file for writing
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_worker, args=(replace(config, worker=i, history=history),),
                                name=f"policyengine-worker-{i}") for i in range(config.workers)]
    for child in children:
        child.start()

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    status = 0
    for child in children:
        child.join()
        status = status or (child.exitcode or 0)
    return 1 if status else 0
