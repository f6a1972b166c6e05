"""``policyengine serve`` (the decision service) and ``policyengine bundle build`` (signed policy bundles).

Thin over ``policyengine.server``: settings are checked and turned into one-line
errors here; the service itself lives in the library package.
"""

from __future__ import annotations

import sys

import click

from ..audit.keys import DEFAULT_KEY_PATH
from ..audit.log import DEFAULT_DB_PATH
from . import state_value


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.command("serve")
@click.option("--rules", "rules", multiple=True, metavar="PATH",
              help="Rule file or folder (repeatable); watched, reloaded on change.")
@click.option("--bundle", metavar="FILE", help="Signed bundle (`policyengine bundle build`); reloaded on change.")
@click.option("--bundle-pubkey", metavar="PEM", help="Public key that signed --bundle.")
@click.option("--allow-bundle-rollback", is_flag=True,
              help="Start on a --bundle built before the last one the audit log (--db) says was activated; "
                   "the rollback is recorded in policy_activated. Without it such a start is refused.")
@click.option("--db", default=str(DEFAULT_DB_PATH), show_default=True, metavar="FILE",
              help="Audit database every decision is recorded in before it is answered.")
@click.option("--key", default=str(DEFAULT_KEY_PATH), show_default=True, metavar="KEYFILE",
              help="Ed25519 key that signs the audit log.")
@click.option("--ledger", metavar="DB", help="DuckDB budget ledger (default: in memory, per process).")
@click.option("--state", metavar="URL", envvar="POLICYENGINE_STATE", callback=state_value,
              help="Shared state: postgresql://... holds budgets and the block list of every worker "
                   "(a DuckDB file: same as --ledger). Env: POLICYENGINE_STATE.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8181, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0: any free port, printed at start).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Processes; with more than one, worker i writes DB.worker<i>.duckdb (rolled: DB.worker<i>.NNNNNN.duckdb).")
@click.option("--ledger-per-worker", is_flag=True,
              help="With --workers N and no --state: let each worker keep its own in-memory budget ledger (every "
                   "limit then holds per worker: N times in all). Without it a policy with budgets is refused.")
@click.option("--roll-records", type=click.IntRange(min=2), metavar="N",
              help="Roll the audit log into segments DB.NNNNNN.duckdb, sealing each after N records.")
@click.option("--roll-bytes", type=click.IntRange(min=1), metavar="BYTES",
              help="Roll the audit log when a segment's file reaches BYTES on disk.")
@click.option("--roll-age", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Roll the audit log when a segment is older than SECONDS (checked at each record).")
@click.option("--auth-token-file", metavar="FILE", help="Require `Authorization: Bearer <the token in FILE>`.")
@click.option("--tls-cert", metavar="PEM", help="Serve HTTPS with this certificate (needs --tls-key).")
@click.option("--tls-key", metavar="PEM", help="Private key of --tls-cert.")
@click.option("--client-ca", metavar="PEM", help="Require client certificates signed by this CA (mTLS).")
@click.option("--max-body", default=1 << 20, show_default=True, type=click.IntRange(min=1), metavar="BYTES",
              help="Largest request body accepted (larger: 413).")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1), metavar="SECONDS",
              help="Time to receive a body, and idle keep-alive time.")
@click.option("--watch-interval", default=1.0, show_default=True, type=click.FloatRange(min=0), metavar="SECONDS",
              help="How often the rules or bundle are checked for changes (0: only on SIGHUP).")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="One JSON line per request on stderr.")
@click.option("--otel", is_flag=True, help="One OpenTelemetry span per decision (needs opentelemetry-sdk).")
@click.option("--inbox", metavar="RUNS_DB", help="Also serve the approver inbox of this runs database at /inbox "
                                                "(docs/inbox.md; needs --rules). With --state postgresql://... the "
                                                "inbox decides every worker's runs kept there and signs its "
                                                "decisions into RUNS_DB.")
@click.option("--inbox-key", metavar="KEYFILE", help="Key that signs RUNS_DB's audit log (default: --key).")
@click.option("--directory", "directory", metavar="FILE",
              help="User directory (YAML, as data/directory.yaml): approvers' roles come from it. Without it, a "
                   "request carrying approvals is refused as malformed (the roles it claims are not trusted).")
@click.option("--registry", metavar="DB",
              help="Audit database whose model_version events say which version each alias names "
                   "(`policyengine models promote --db DB`); re-read when it changes and on SIGHUP "
                   "(default: --db, read at start: this server holds it).")
@click.option("--shadow", "shadow", multiple=True, metavar="PATH",
              help="Candidate rule file or folder (repeatable): decided beside the live policy, never answered; "
                   "differences are recorded as shadow_diff audit events.")
def serve_command(rules: tuple[str, ...], bundle: str | None, bundle_pubkey: str | None, allow_bundle_rollback: bool,
                  db: str, key: str,
                  ledger: str | None, state: str | None, host: str, port: int, workers: int, ledger_per_worker: bool,
                  roll_records: int | None, roll_bytes: int | None, roll_age: float | None,
                  auth_token_file: str | None, tls_cert: str | None, tls_key: str | None, client_ca: str | None,
                  max_body: int, timeout: float, watch_interval: float, access_log: bool, otel: bool,
                  inbox: str | None, inbox_key: str | None, directory: str | None, registry: str | None,
                  shadow: tuple[str, ...]) -> None:
    """Serve decisions over HTTP (native API and AuthZEN 1.0); every decision is audited before it is answered.

    Example: policyengine serve --rules rules/ --db audit.duckdb --key policyengine.key
    """
    from ..server.run import ServeConfig, ServeError, serve

    if bool(rules) == bool(bundle):
        raise click.UsageError("give either --rules PATH or --bundle FILE --bundle-pubkey PEM")
    if allow_bundle_rollback and not bundle:
        raise click.UsageError("--allow-bundle-rollback goes with --bundle")
    if ledger and state:
        raise click.UsageError("give either --ledger or --state, not both")
    for option, value in (("--ledger", ledger), ("--db", db), ("--key", key)):
        if value is not None and not value.strip():  # an empty --ledger was the in-memory one: budgets restarted
            _fail(f"{option}: empty; leave it out for the default")
    if ledger_per_worker and (workers == 1 or ledger or state):
        raise click.UsageError("--ledger-per-worker goes with --workers N and no --ledger/--state")
    config = ServeConfig(rules=rules, bundle=bundle, bundle_pubkey=bundle_pubkey,
                         allow_bundle_rollback=allow_bundle_rollback, db=db, key=key,
                         ledger=ledger or state,
                         host=host, port=port, workers=workers, ledger_per_worker=ledger_per_worker,
                         auth_token_file=auth_token_file, tls_cert=tls_cert,
                         tls_key=tls_key, client_ca=client_ca, max_body=max_body, timeout=timeout,
                         access_log=access_log, otel=otel, watch_interval=watch_interval, inbox=inbox,
                         inbox_key=inbox_key, roll_records=roll_records, roll_bytes=roll_bytes, roll_age=roll_age,
                         shadow=shadow, registry=registry, directory=directory)
    try:
        sys.exit(serve(config))
    except ServeError as error:
        _fail(str(error))


@click.group("bundle")
def bundle_group() -> None:
    """Build signed policy bundles for `policyengine serve --bundle`."""


@bundle_group.command("build")
@click.argument("paths", nargs=-1, required=True, metavar="PATHS...")
@click.option("--key", required=True, metavar="KEYFILE", help="Ed25519 private key that signs the manifest.")
@click.option("--out", required=True, metavar="FILE", help="Bundle to write (tar.gz).")
def bundle_build(paths: tuple[str, ...], key: str, out: str) -> None:
    """Pack rule files into a bundle with a manifest of their hashes, signed with KEYFILE.

    The rules are checked first: a bundle that would not load is not built.
    Example: policyengine bundle build rules/ --key bundle.key --out bundle.tar.gz
    """
    from ..audit import AuditError, load_private_key
    from ..diagnostics import PolicyError, render_findings
    from ..engine import load_policy
    from ..server.bundles import BundleError, build_bundle

    try:
        signing = load_private_key(key)
    except AuditError as error:
        _fail(str(error))
    try:
        load_policy(list(paths))
    except PolicyError as error:
        click.echo(render_findings(error.findings), err=True)
        _fail("the rules have errors; no bundle built")
    try:
        files = build_bundle(list(paths), signing, out)
    except (BundleError, OSError) as error:
        _fail(str(error))
    click.echo(f"wrote {out}: {len(files)} files, signed by {signing.key_id}")


COMMANDS: list = [serve_command, bundle_group]
