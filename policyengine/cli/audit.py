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


_DUCKDB_MAGIC = (8, b"DUCK")  # a DuckDB file's header: its magic bytes at offset 8


def _refuse_precious(out: Path) -> None:
    """An ``--out`` file is replaced whole: refuse one that is a DuckDB database (the audit log itself, a
    segment) or a private key, where a slip of the operator's would lose the log or the key for good."""
    try:
        with open(out, "rb") as fh:
            head = fh.read(4096)
    except (FileNotFoundError, IsADirectoryError):
        return
    except OSError as err:
        raise AuditError(f"{out}: cannot check the --out file ({err.strerror})") from None
    offset, magic = _DUCKDB_MAGIC
    if head[offset:offset + len(magic)] == magic:
        raise AuditError(f"{out}: is a DuckDB database (an audit log?); refusing to write over it, give another --out")
    if b"PRIVATE KEY-----" in head:
        raise AuditError(f"{out}: is a private key; refusing to write over it, give another --out")


def _write_out(out: Path, text: str) -> None:
    _refuse_precious(out)
    out.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}", err=True)


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
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Verify a folder of rolled segments (<series>.NNNNNN.duckdb) and the chain between them.")
@_pubkey_option
@click.option("--anchor", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="A checkpoint saved by `audit checkpoint --out`: prove the log still contains it.")
@click.option("--strict", "_strict", is_flag=True, hidden=True,
              help="Accepted for old scripts: records no checkpoint covers always fail now.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_errors
def verify_command(db: Path, export: Path | None, folder: Path | None, pubkeys: tuple[Path, ...],
                   anchor: Path | None, _strict: bool, as_json: bool) -> None:
    """Check every record, checkpoint signature and key of an audit log.

    Exit status 0 when intact; 1 naming the first bad seq and what happened
    to it: modified, deleted, reordered, truncated, forged signature,
    unknown key, unsigned (no checkpoint covers it), anchor not contained;
    nothing signed (no record at all: emptied and never-written logs look alike).

    \b
    Examples:
      policyengine audit verify --db policyengine.duckdb --pubkey policyengine.key.pub.pem
      policyengine audit verify --anchor witness/checkpoint.json
      policyengine audit verify --export audit.parquet --pubkey team.pub.pem
      policyengine audit verify --dir segments/ --pubkey policyengine.key.pub.pem
    """
    try:
        _verify(db, export, folder, pubkeys, anchor, as_json)
    except (AuditError, OSError, duckdb.Error) as err:  # with --json a refusal is JSON too: stdout is never empty
        if as_json:
            click.echo(json.dumps({"ok": False, "source": str(folder or export or db), "error": str(err)}))
        raise


def _verify(db: Path, export: Path | None, folder: Path | None, pubkeys: tuple[Path, ...], anchor: Path | None,
            as_json: bool) -> None:
    trusted = _trusted(pubkeys)
    if folder is not None:
        if export is not None or anchor is not None:
            raise click.UsageError("--dir checks a folder of segments; give it without --export/--anchor")
        from ..audit.segments import verify_segments

        result = verify_segments(folder, trusted)
        click.echo(json.dumps(result.to_json()) if as_json else result.summary(), err=not result.ok and not as_json)
        if not as_json:
            for note in result.notes:
                click.echo(f"note: {note}", err=True)
        sys.exit(0 if result.ok else 1)
    anchored = read_anchor(anchor) if anchor else None
    if export is not None:
        report = verify_export(export, trusted, anchor=anchored)
    else:
        report = verify_database(db, trusted, anchor=anchored)
    click.echo(json.dumps(report.to_json()) if as_json else report.summary(), err=not report.ok and not as_json)
    if not as_json:
        for note in report.notes:
            click.echo(f"note: {note}", err=True)
    sys.exit(0 if report.ok else 1)


@audit_group.command("checkpoint")
@_db_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the anchor here (default: print it).")
@click.option("--format", "fmt", type=click.Choice(["json", "note"]), default="json", show_default=True,
              help="json: an anchor for `audit verify --anchor`; note: a C2SP signed note for witnesses.")
@_pubkey_option
@_errors
def checkpoint_command(db: Path, out: Path | None, fmt: str, pubkeys: tuple[Path, ...]) -> None:
    """Export the latest signed checkpoint, for an auditor or witness to keep.

    Later, `audit verify --anchor FILE` proves the log still contains it. With
    `--format note` it is a c2sp.org/signed-note checkpoint (verify it with the
    string `keys vkey` prints).

    Example: policyengine audit checkpoint --out anchor-2026-11-24.json
    """
    checkpoint = latest_checkpoint(db)
    if fmt == "note":
        from ..audit.notes import signed_note

        key = next((k for k in _trusted(pubkeys) if k.key_id == checkpoint.key_id), None)
        if key is None:
            raise AuditError(f"the latest checkpoint is signed by key {checkpoint.key_id}; pass its public key with --pubkey")
        text = signed_note(checkpoint, key)
    else:
        text = json.dumps(anchor_json(checkpoint), indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        _write_out(out, text)


@audit_group.command("prove")
@click.argument("seq", type=click.IntRange(min=1), required=False)
@_db_option
@click.option("--consistency", "old_size", type=click.IntRange(min=1), metavar="OLD_SIZE",
              help="Prove instead that the log of OLD_SIZE records is a prefix of the latest checkpoint.")
@click.option("--format", "fmt", type=click.Choice(["json", "tlog-proof"]), default="json", show_default=True,
              help="tlog-proof: the c2sp.org/tlog-proof@v1 text (needs the signing key's --pubkey).")
@_pubkey_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the proof here (default: print it).")
@_errors
def prove_command(seq: int | None, db: Path, old_size: int | None, fmt: str, pubkeys: tuple[Path, ...],
                  out: Path | None) -> None:
    """Give an inclusion proof for record SEQ (or a consistency proof) that verifies without the database.

    Check it with `policyengine audit verify-proof FILE --pubkey PEM`.
    Examples: policyengine audit prove 42 --format tlog-proof > 42.tlog-proof;
    policyengine audit prove --consistency 1000
    """
    from ..audit.proofs import prove_consistency, prove_tlog

    if (seq is None) == (old_size is None):
        raise click.UsageError("give either SEQ (inclusion) or --consistency OLD_SIZE")
    if old_size is not None:
        if fmt != "json":
            raise click.UsageError("--consistency proofs are JSON (c2sp.org/tlog-proof covers inclusion only)")
        text = json.dumps(prove_consistency(db, old_size), indent=2) + "\n"
    elif fmt == "tlog-proof":
        checkpoint = latest_checkpoint(db)
        key = next((k for k in _trusted(pubkeys) if k.key_id == checkpoint.key_id), None)
        if key is None:
            raise AuditError(f"the latest checkpoint is signed by key {checkpoint.key_id}; pass its public key with --pubkey")
        text = prove_tlog(db, seq, key)
    else:
        text = json.dumps(prove(db, seq), indent=2, ensure_ascii=False) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        _write_out(out, text)


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
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE")
@click.option("--tiles", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Write the log as static C2SP tlog-tiles (and its checkpoint note) under DIR, for monitors.")
@_pubkey_option
@_errors
def export_command(db: Path, fmt: str | None, out: Path | None, tiles: Path | None, pubkeys: tuple[Path, ...]) -> None:
    """Export records and checkpoints to a file that verifies on its own (or as tiles).

    Check it with `policyengine audit verify --export FILE --pubkey PEM`.
    Examples: policyengine audit export --format parquet --out audit.parquet;
    policyengine audit export --tiles public/ --pubkey policyengine.key.pub.pem
    """
    if tiles is not None:
        if fmt is not None or out is not None:
            raise click.UsageError("--tiles writes a folder; give it without --format/--out")
        from ..audit.tiles import export_tiles

        checkpoint = latest_checkpoint(db)
        key = next((k for k in _trusted(pubkeys) if k.key_id == checkpoint.key_id), None)
        if key is None:
            raise AuditError(f"the latest checkpoint is signed by key {checkpoint.key_id}; pass its public key with --pubkey")
        size = export_tiles(db, tiles, key)
        click.echo(f"wrote tiles of {size} records to {tiles}", err=True)
        return
    if fmt is None or out is None:
        raise click.UsageError("give --format jsonl|parquet and --out FILE (or --tiles DIR)")
    _refuse_precious(out)
    count = (export_jsonl if fmt == "jsonl" else export_parquet)(db, out)
    click.echo(f"wrote {count} records to {out}", err=True)


@audit_group.command("prune")
@click.option("--dir", "folder", required=True, type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Folder of rolled segments (`serve --roll-*`).")
@click.option("--before", required=True, metavar="DATE",
              help="Drop sealed segments whose newest record is older than this (ISO 8601; no zone: UTC).")
@click.option("--retention-months", default=6, show_default=True, type=int, metavar="N",
              help="Keep every segment with a record younger than N months; at least 6 (EU AI Act Art. 12/19).")
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_KEY_PATH,
              show_default=True, metavar="KEYFILE", help="Key that signs the segments_pruned record.")
@click.option("--pubkey", "pubkeys", multiple=True, type=click.Path(dir_okay=False, path_type=Path), metavar="PEM",
              help="Trusted public key the folder must verify with first (repeatable). Default: KEYFILE's.")
@click.option("--dry-run", is_flag=True, help="Say what would be dropped; write and delete nothing.")
@_errors
def prune_command(folder: Path, before: str, retention_months: int, key: Path, pubkeys: tuple[Path, ...],
                  dry_run: bool) -> None:
    """Drop old sealed segments, recording what was dropped in a signed segments_pruned record.

    Only the oldest segments of each series go, never a series' newest one, and
    never a segment younger than the retention floor: such a request is refused
    whole. The folder must verify first (as `audit verify --dir`). The record (in
    DIR/segments-pruned.duckdb) is durable before any file is deleted; `audit
    verify --dir` then checks the chain from it.

    Example: policyengine audit prune --dir segments/ --before 2026-01-01 --dry-run
    """
    from ..audit.segments import prune_segments
    from ..clock import parse_time

    try:
        cutoff = parse_time(before)
    except ValueError as error:
        raise AuditError(f"--before: {error}") from None
    signing = None if dry_run and pubkeys else load_private_key(key)
    trusted = [load_public_key(p) for p in pubkeys]
    result = prune_segments(folder, cutoff, signing, retention_months=retention_months, dry_run=dry_run,
                            trusted=trusted)
    for line in result.lines(dry_run):
        click.echo(line)
    if result.seq is not None:
        click.echo(f"recorded segments_pruned at seq {result.seq} of {folder / 'segments-pruned.duckdb'} "
                   f"(retention floor {result.floor:%Y-%m-%d})", err=True)


@click.group("keys")
def keys_group() -> None:
    """Create and rotate the Ed25519 keys that sign audit checkpoints and approvals."""


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
    click.echo(f"from now on the log is signed with {new_key}: pass --key {new_key} to every command that writes "
               f"to {db} ({key} is refused)", err=True)


@keys_group.command("vkey")
@click.option("--pubkey", type=click.Path(dir_okay=False, path_type=Path), metavar="PEM",
              help="Public key (default: the default key's .pub.pem).")
@click.option("--name", metavar="NAME", help="Key name (default: the origin of the log in --db).")
@_db_option
@_errors
def vkey_command(pubkey: Path | None, name: str | None, db: Path) -> None:
    """Print the C2SP verifier key string (name+hash+key) for signed-note checkpoints.

    Example: policyengine keys vkey --pubkey policyengine.key.pub.pem --db audit.duckdb
    """
    from ..audit.notes import verifier_key

    (key,) = _trusted((pubkey,) if pubkey is not None else ())[:1]
    if name is None:
        with open_readonly(db) as con:
            meta = con.execute(q("read_meta")).fetchone()
        if meta is None:
            raise AuditError(f"{db}: has no log origin yet; pass --name")
        name = meta[0]
    click.echo(verifier_key(name, key))


@keys_group.command("sign-approval")
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), required=True, metavar="KEYFILE",
              help="The approver's own private key (its .pub.pem is their public_key in the user directory).")
@click.option("--as", "approver", required=True, metavar="USER", help="The approver: a user id of the directory.")
@click.option("--gate", required=True, help="The gate (or budget) approved, e.g. finance.invoices.large_payment.")
@click.option("--run-id", metavar="RUN", help="Bind to the requests of this run (their context.run_id).")
@click.option("--request", "request_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Bind to exactly this request (a JSON file, the native shape): its request_hash.")
@click.option("--ts", metavar="TIME", help="When it was given, ISO 8601 (default: now, UTC).")
@_errors
def sign_approval_command(key: Path, approver: str, gate: str, run_id: str | None, request_file: Path | None,
                          ts: str | None) -> None:
    """Print an approval entry signed with the approver's key, for a request's "approvals" list.

    `policyengine serve --directory FILE` counts an approval only when the
    directory's public_key of its approver verifies its signature.

    Example: policyengine keys sign-approval --key alice.key --as alice
    --gate finance.invoices.large_payment --request payment.json
    """
    from datetime import UTC, datetime

    from ..approval_binding import request_hash
    from ..approval_signature import signed
    from ..identity import IdentityError, canonical_identity

    if (run_id is None) == (request_file is None):
        raise click.UsageError("give one of --run-id RUN and --request FILE (what the approval is for)")
    try:
        who = canonical_identity(approver, "--as")
    except IdentityError as err:
        raise click.UsageError(str(err)) from None
    if ts is None:
        ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    else:
        try:
            datetime.fromisoformat(ts)
        except ValueError:
            raise click.UsageError(f"--ts {ts!r}: not an ISO 8601 time (e.g. 2026-12-07T14:30:00Z)") from None
    entry: dict[str, Any] = {"gate": gate, "approver": who, "ts": ts}
    if run_id is not None:
        entry["run_id"] = run_id
    else:
        entry["request_hash"] = request_hash(_one_request(request_file))
    click.echo(json.dumps(signed(entry, load_private_key(key)), ensure_ascii=False))


def _one_request(path: Path) -> dict[str, Any]:
    """The one JSON request object in ``path`` (read as ``eval`` reads requests); ``AuditError`` naming the file."""
    from ..engine import read_requests

    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise AuditError(f"{path}: not UTF-8 ({err.reason} at byte {err.start})") from None
    items = list(read_requests(text))
    if len(items) != 1:
        raise AuditError(f"{path}: holds {len(items)} JSON values; give the one request the approval is for")
    item = items[0]
    if item.error is not None or not isinstance(item.request, dict):
        raise AuditError(f"{path}: {item.error or 'not a JSON object'}")
    return item.request
