"""``policyengine audit ...`` and ``policyengine keys ...``: the auditor's and key holder's commands.

Each command is a few lines over ``policyengine.audit``; every ``AuditError``
becomes one ``error:`` line on stderr and exit status 1.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import duckdb

from ..audit import (
    AuditError,
    AuditLog,
    generate_key,
    load_private_key,
    load_public_key,
)
from ..audit.export import (
    export_jsonl,
    export_parquet,
    open_readonly,
    verify_database,
    verify_export,
)
from ..audit.keys import DEFAULT_KEY_PATH, PublicKey, public_key_path
from ..audit.log import DEFAULT_DB_PATH
from ..audit.proofs import (
    anchor_json,
    latest_checkpoint,
    prove,
    read_anchor,
    read_json_file,
    verify_proof,
)
from ..audit.sql import q


def _errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn AuditError into one line on stderr and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AuditError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(1)
        except OSError as err:  # an --out file that cannot be written, and the like
            where = f"{err.filename}: " if err.filename else ""
            click.echo(f"error: {where}{(err.strerror or type(err).__name__).lower()}", err=True)
            sys.exit(1)
        except duckdb.Error as err:  # a last resort: a table of the right name but the wrong shape
            where = f"{kwargs['db']}: " if kwargs.get("db") is not None else ""
            click.echo(f"error: {where}cannot read the audit database ({str(err).splitlines()[0]})", err=True)
            sys.exit(1)

    return wrapper


def _db_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    # a directory is bad input, not a usage error: connect() names it in one line, exit 1
    return click.option("--db", type=click.Path(path_type=Path), default=DEFAULT_DB_PATH,
                        show_default=True, help="DuckDB file holding the audit log.")(fn)


def _pubkey_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--pubkey", "pubkeys", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
                        metavar="PEM", help="Trusted public key (repeatable). Default: policyengine.key.pub.pem "
                        "in the current directory, if present.")(fn)


def _trusted(pubkeys: tuple[Path, ...]) -> list[PublicKey]:
    if pubkeys:
        return [load_public_key(p) for p in pubkeys]
    default = public_key_path(DEFAULT_KEY_PATH)
    if default.exists():
        return [load_public_key(default)]
    raise AuditError(f"no trusted public key: pass --pubkey PEM (or keep {default} in the current directory)")


@click.group("audit")
def audit_group() -> None:
    """Verify, prove, anchor, tail and export the signed audit trail.

    Records are hashed into an RFC 9162 Merkle tree and checkpoints of it are
    signed with Ed25519; see docs/audit.md for the exact bytes.
    """


@audit_group.command("verify")
@_db_option
@click.option("--export", "export", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Verify an export (.jsonl or .parquet) instead of the database.")
@_pubkey_option
@click.option("--anchor", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="A checkpoint saved by `audit checkpoint --out`: prove the log still contains it.")
@click.option("--strict", "_strict", is_flag=True, hidden=True,
              help="Accepted for old scripts: records no checkpoint covers always fail now.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_errors
def verify_command(db: Path, export: Path | None, pubkeys: tuple[Path, ...], anchor: Path | None,
                   _strict: bool, as_json: bool) -> None:
    """Check every record, checkpoint signature and key of an audit log.

    Exit status 0 when intact; 1 naming the first bad seq and what happened
    to it: modified, deleted, reordered, truncated, forged signature,
    unknown key, unsigned (no checkpoint covers it), anchor not contained.

    \b
    Examples:
      policyengine audit verify --db policyengine.duckdb --pubkey policyengine.key.pub.pem
      policyengine audit verify --anchor witness/checkpoint.json
      policyengine audit verify --export audit.parquet --pubkey team.pub.pem
    """
    trusted = _trusted(pubkeys)
    anchored = read_anchor(anchor) if anchor else None
    if export is not None:
        report = verify_export(export, trusted, anchor=anchored)
    else:
        report = verify_database(db, trusted, anchor=anchored)
    click.echo(json.dumps(report.to_json()) if as_json else report.summary(), err=not report.ok and not as_json)
    sys.exit(0 if report.ok else 1)


@audit_group.command("checkpoint")
@_db_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the anchor here (default: print it).")
@_errors
def checkpoint_command(db: Path, out: Path | None) -> None:
    """Export the latest signed checkpoint, for an auditor or witness to keep.

    Later, `audit verify --anchor FILE` proves the log still contains it.

    Example: policyengine audit checkpoint --out anchor-2026-11-24.json
    """
    text = json.dumps(anchor_json(latest_checkpoint(db)), indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}", err=True)


@audit_group.command("prove")
@click.argument("seq", type=click.IntRange(min=1))
@_db_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the proof here (default: print it).")
@_errors
def prove_command(seq: int, db: Path, out: Path | None) -> None:
    """Give an inclusion proof for record SEQ that verifies without the database.

    Check it with `policyengine audit verify-proof FILE --pubkey PEM`.
    """
    text = json.dumps(prove(db, seq), indent=2, ensure_ascii=False) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}", err=True)


@audit_group.command("verify-proof")
@click.argument("proof", type=click.Path(dir_okay=False, path_type=Path))
@_pubkey_option
@_errors
def verify_proof_command(proof: Path, pubkeys: tuple[Path, ...]) -> None:
    """Check an inclusion proof written by `audit prove` against a public key.

    Example: policyengine audit verify-proof proof-42.json --pubkey auditor.pub.pem
    """
    click.echo(verify_proof(read_json_file(proof, "proof"), _trusted(pubkeys), where=str(proof)))


@audit_group.command("tail")
@_db_option
@click.option("-n", "--lines", "count", type=click.IntRange(min=1), default=10, show_default=True,
              help="How many of the latest records to show.")
@_errors
def tail_command(db: Path, count: int) -> None:
    """Print the latest records, one JSON object per line.

    Example: policyengine audit tail -n 5 --db policyengine.duckdb
    """
    from ..audit.export import RECORD_COLUMNS

    with open_readonly(db) as con:
        try:
            rows = con.execute(q("tail"), {"limit": count}).fetchall()
        except duckdb.Error as err:  # missing tables and the like
            raise AuditError(f"{db}: not a policyengine audit log ({str(err).splitlines()[0]})") from None
    for row in rows:
        record = dict(zip(RECORD_COLUMNS, row, strict=True))
        record["payload"] = json.loads(record["payload"])
        click.echo(json.dumps(record, ensure_ascii=False))


@audit_group.command("export")
@_db_option
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, metavar="FILE")
@_errors
def export_command(db: Path, fmt: str, out: Path) -> None:
    """Export records and checkpoints to a file that verifies on its own.

    Check it with `policyengine audit verify --export FILE --pubkey PEM`.
    """
    count = (export_jsonl if fmt == "jsonl" else export_parquet)(db, out)
    click.echo(f"wrote {count} records to {out}", err=True)


@click.group("keys")
def keys_group() -> None:
    """Create and rotate the Ed25519 keys that sign audit checkpoints."""


@keys_group.command("generate")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_KEY_PATH,
              show_default=True, metavar="KEYFILE", help="Private key file (mode 0600); KEYFILE.pub.pem beside it.")
@click.option("--force", is_flag=True, help="Overwrite an existing key file.")
@_errors
def generate_command(out: Path, force: bool) -> None:
    """Generate a signing key and print its key id (its fingerprint).

    Example: policyengine keys generate --out signing.key
    (writes signing.key, mode 0600, and signing.key.pub.pem for verifiers)
    """
    key = generate_key(out, overwrite=force)
    click.echo(f"{key.key_id}  {out}  {public_key_path(out)}")


@keys_group.command("rotate")
@_db_option
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_KEY_PATH,
              show_default=True, metavar="KEYFILE", help="The key signing the log now.")
@click.option("--new-key", type=click.Path(dir_okay=False, path_type=Path), required=True, metavar="KEYFILE",
              help="The key to sign with from now on (create it with `keys generate`).")
@_errors
def rotate_command(db: Path, key: Path, new_key: Path) -> None:
    """Hand the log over to a new key: a key_rotated record signed by the old key.

    Example: policyengine keys generate --out next.key &&
    policyengine keys rotate --key policyengine.key --new-key next.key
    """
    old, new = load_private_key(key), load_private_key(new_key)
    with AuditLog(db, old, create=False) as log:  # rotate an existing log; never start one here
        seq = log.rotate_key(new)
    click.echo(f"rotated {old.key_id} -> {new.key_id} at seq {seq}")


