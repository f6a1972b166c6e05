"""``policyengine inbox serve|token``: the approver inbox web page and its sign-in tokens.

Thin over ``policyengine.server.inbox`` (the app) and ``policyengine.store.directory``
(where a token's SHA-256 is kept). See docs/inbox.md.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from ..store.files import DEFAULT_DB_PATH, DEFAULT_KEY_PATH
from . import state_value


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.group("inbox")
def inbox_group() -> None:
    """Approver inbox: a web page to approve or reject waiting runs, and its sign-in tokens."""


@inbox_group.command("serve")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_DB_PATH, show_default=True,
              help="DuckDB database holding the runs and their audit log.")
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_KEY_PATH, show_default=True,
              help="Ed25519 key that signs the audit log (approvals are recorded with it).")
@click.option("--rules", "rules", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Rule files or folders the runs were started with (repeatable; default: the shipped rules/).")
@click.option("--mask", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Masking config YAML (default: policyengine.mask.yaml beside the database, if present).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8282, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0: any free port, printed at start).")
@click.option("--secure-cookie", is_flag=True,
              help="Mark the session cookie Secure (when a TLS proxy serves the inbox over HTTPS).")
@click.option("--state", metavar="URL", envvar="POLICYENGINE_STATE", callback=state_value,
              help="Shared run state: postgresql://... holds the runs and approvals of every worker (as "
                   "`run --state`); the inbox's decisions are still signed into --db. Env: POLICYENGINE_STATE.")
def inbox_serve(db: Path, key: Path, rules: tuple[Path, ...], mask: Path | None, host: str, port: int,
                secure_cookie: bool, state: str | None) -> None:
    """Serve the approver inbox for the runs in --db (or --state) until stopped.

    Approvers sign in with a token from `policyengine inbox token`; approve and
    reject run the same checks as `policyengine approve` and `reject`
    (four-eyes, the gate's role, the deadline). Example:
    policyengine inbox serve --db policyengine.duckdb --port 8282
    """
    from ..server.inbox import InboxConfig, InboxError, serve_inbox

    try:
        sys.exit(serve_inbox(InboxConfig(db=db, key=key, rules=rules, mask=mask, secure_cookie=secure_cookie,
                                         state=state), host, port))
    except InboxError as error:
        _fail(str(error))


@inbox_group.command("token")
@click.option("--user", "user", required=True, help="The approver: a user id of the directory.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_DB_PATH, show_default=True,
              help="The database whose directory (policyengine.directory.yaml beside it) holds the user.")
def inbox_token(user: str, db: Path) -> None:
    """Mint a sign-in token for USER; print it once. The directory keeps only its SHA-256.

    The token replaces the user's previous one (their open inbox sessions end).
    Without a directory beside the database, the shipped one is copied there
    first. The change to the directory is audited (directory_changed) by the
    next command that writes to the database.
    """
    from ..orchestrator.session import default_directory
    from ..server.inbox import new_token, token_digest
    from ..store.directory import store_token_hash
    from ..store.files import DIRECTORY_NAME, StoreError, beside_database

    try:
        target = beside_database(db, DIRECTORY_NAME)
    except StoreError as exc:
        _fail(str(exc))
    if not target.parent.is_dir():
        _fail(f"{target.parent}: no such directory (give --db the database the inbox serves)")
    if not target.exists():
        try:
            shutil.copyfile(default_directory(), target)
        except OSError as exc:
            _fail(f"{target}: cannot write the user directory: {exc.strerror}")
        click.echo(f"wrote {target} (a copy of the shipped user directory)", err=True)
    token = new_token()
    try:
        uid = store_token_hash(target, user, token_digest(token))
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    click.echo(token)
    click.echo(f"stored the token's SHA-256 for {uid} in {target}; the token itself is shown only now", err=True)


COMMANDS: list = [inbox_group]
