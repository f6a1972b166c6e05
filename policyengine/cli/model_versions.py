"""``models promote | rollback | versions | approve | reject``: model and agent versions with rollback.

Thin over ``policyengine.models_registry``: the audit log is the registry, every
change a signed event; the rules decide who may change what and which changes
wait for an approval (docs/model-versions.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .reporting import DEFAULT_DB, DEFAULT_KEY, _default_rules, _fail, _policy, _signing_key


def _common(f: Any) -> Any:
    for option in reversed([
        click.option("--db", default=DEFAULT_DB, show_default=True, help="Audit database (the registry)."),
        click.option("--rules", multiple=True, metavar="PATH",
                     help="Rule files or folders declaring the versions; repeatable (default: the shipped rules/)."),
    ]):
        f = option(f)
    return f


def _writing(f: Any) -> Any:
    f = click.option("--key", metavar="KEYFILE", help=f"Signing key (default: ./{DEFAULT_KEY}).")(f)
    return click.option("--as", "user", required=True,
                        help="Who makes the change (a user of the deployment's directory).")(f)


def _directory(db: str) -> Any:
    from ..orchestrator.approvals import Directory
    from ..orchestrator.session import resolved_directory
    from ..store.files import StoreError

    try:
        return Directory.load(resolved_directory(Path(db)))
    except (ValueError, StoreError) as e:
        _fail(str(e))


def _run(fn: Any, **kwargs: Any) -> Any:
    from ..models_registry import VersionError
    from ..reporting import ReportError

    try:
        return fn(**kwargs)
    except (VersionError, ReportError) as e:
        _fail(str(e))


def _change(verb: str, name: str, to: str | None, alias: str, user: str, reason: str, db: str,
            rules: tuple[str, ...], key: str | None) -> None:
    from ..models_registry import change

    policy = _policy(_default_rules(rules))
    key_path = _signing_key(key, f": every {verb} is signed into the audit log")
    out = _run(change, db=db, policy=policy, directory=_directory(db), name=name, to=to, user=user, reason=reason,
               alias=alias, verb=verb, key=key_path)
    p = out.payload
    if out.status == "requested":
        click.echo(f"requested: {alias} of {name} -> {p['version']} waits for approval by role {p['role']} "
                   f"(`policyengine models approve {p['request_id']} --as USER`); audit seq {out.seq}")
    else:
        done = {"promote": "promoted", "rollback": "rolled back"}[verb]
        click.echo(f"{done}: {alias} of {name} is now {p['version']} (was {p['previous']}); audit seq {out.seq}")


@click.command("promote")
@click.argument("name")
@click.option("--to", "to", required=True, metavar="VERSION", help="The declared version the alias will name.")
@click.option("--alias", default="production", show_default=True, help="The alias that moves.")
@click.option("--reason", required=True, help="Why (kept in the signed audit event).")
@_writing
@_common
def promote(name: str, to: str, alias: str, reason: str, user: str, key: str | None, db: str,
            rules: tuple[str, ...]) -> None:
    """Point ALIAS (default production) of model or agent NAME at version --to, as the rules allow."""
    _change("promote", name, to, alias, user, reason, db, rules, key)


@click.command("rollback")
@click.argument("name")
@click.option("--to", "to", metavar="VERSION", help="The version to go back to (default: the one before).")
@click.option("--alias", default="production", show_default=True, help="The alias that moves.")
@click.option("--reason", required=True, help="Why (kept in the signed audit event).")
@_writing
@_common
def rollback(name: str, to: str | None, alias: str, reason: str, user: str, key: str | None, db: str,
             rules: tuple[str, ...]) -> None:
    """Point ALIAS (default production) of NAME back at an earlier version, as the rules allow."""
    _change("rollback", name, to, alias, user, reason, db, rules, key)


def _decide(approve: bool, request_id: str, user: str, note: str | None, key: str | None, db: str,
            rules: tuple[str, ...]) -> None:
    from ..models_registry import decide

    policy = _policy(_default_rules(rules))
    key_path = _signing_key(key, ": every approval is signed into the audit log")
    out = _run(decide, db=db, policy=policy, directory=_directory(db), rid=request_id, user=user, approve=approve,
               note=note, key=key_path)
    p = out.payload
    if approve:
        click.echo(f"approved: {p['alias']} of {p['name']} is now {p['version']} (was {p['previous']}); "
                   f"audit seq {out.seq}")
    else:
        click.echo(f"rejected: {p['alias']} of {p['name']} stays {p.get('previous')}; audit seq {out.seq}")


@click.command("approve")
@click.argument("request_id")
@click.option("--note", help="A comment kept with the approval.")
@_writing
@_common
def approve(request_id: str, note: str | None, user: str, key: str | None, db: str, rules: tuple[str, ...]) -> None:
    """Approve the waiting version change REQUEST_ID (four-eyes: not its requester; the gate's role)."""
    _decide(True, request_id, user, note, key, db, rules)


@click.command("reject")
@click.argument("request_id")
@click.option("--note", help="Why it is rejected.")
@_writing
@_common
def reject(request_id: str, note: str | None, user: str, key: str | None, db: str, rules: tuple[str, ...]) -> None:
    """Reject the waiting version change REQUEST_ID (four-eyes, as approve)."""
    _decide(False, request_id, user, note, key, db, rules)


@click.command("versions")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print aliases, history and waiting changes as JSON.")
@_common
def versions(name: str | None, as_json: bool, db: str, rules: tuple[str, ...]) -> None:
    """Declared versions, what each alias names now, every change and the changes waiting for approval."""
    from ..models_registry import aliases, declared, history, pending
    from ..reporting.db import open_readonly

    decl = declared(_policy(_default_rules(rules)).policy_set)
    if name is not None and name not in decl:
        _fail(f"{name!r} declares no versions in the rules (with versions: {', '.join(sorted(decl)) or 'none'})")
    if Path(db).is_file():
        con = _run(open_readonly, path=db)
        try:
            changes, waiting = _run(history, con=con, name=name), _run(pending, con=con)
        finally:
            con.close()
    else:
        changes, waiting = [], {}
    table = aliases(changes, decl)
    names = [name] if name else sorted(decl)
    waits = [w for w in waiting.values() if name is None or w.payload.get("name") == name]
    if as_json:
        click.echo(json.dumps({
            "models": {n: {"kind": decl[n].kind, "versions": list(decl[n].versions), "aliases": table.get(n, {})}
                       for n in names},
            "history": [c.row() for c in changes],
            "pending": [{"request_id": w.request_id, "ts": w.ts.isoformat(), **w.payload} for w in waits]}))
        return
    for n in names:
        named = ", ".join(f"{a}={v}" for a, v in sorted(table.get(n, {}).items()))
        click.echo(f"{decl[n].kind} {n}: versions {', '.join(decl[n].versions)}; {named}")
    for c in changes:
        approved = f", approved by {c.approved_by}" if c.approved_by else ""
        click.echo(f"  {c.ts:%Y-%m-%d %H:%M:%S} {c.change} {c.name} {c.alias} {c.previous} -> {c.version} "
                   f"by {c.by}{approved}: {c.reason}")
    for w in waits:
        p = w.payload
        click.echo(f"  waiting {w.request_id}: {p.get('change')} {p.get('name')} {p.get('alias')} -> "
                   f"{p.get('version')} by {p.get('by')}, needs role {p.get('role')}")


COMMANDS: list[click.Command] = [promote, rollback, approve, reject, versions]
