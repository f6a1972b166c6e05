"""The approver inbox's HTML: the sign-in page, the list of pending approvals, and error pages.

Pure functions from data to text. Every value that comes from the database, the
directory or the request is escaped here (``_e``); nothing is marked safe. The
pages carry no script and no inline style: their one stylesheet is served by
the app (``STYLESHEET``), so the Content-Security-Policy can forbid both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from importlib import resources
from typing import Any

STYLESHEET = resources.files("policyengine.server").joinpath("inbox.css").read_bytes()


@dataclass(frozen=True)
class PendingItem:
    """One pending gate the signed-in user holds the role for, with what they decide on."""

    run_id: str
    workflow: str
    item_id: str | None
    requested_by: str
    step: str
    gate: str
    role: str
    requested_at: datetime
    deadline_at: datetime | None
    on_timeout: str
    overdue: bool
    own_run: bool  # the user requested the run: four-eyes forbids them to decide it
    request: dict[str, Any] | None  # the escalated request as the audit log holds it (masked)
    reasons: tuple[dict[str, Any], ...] = ()  # the decision's reasons: rule, message, file, line
    steps: tuple[tuple[str, str, str], ...] = field(default=())  # (step, status, policy effect) so far
    decides: tuple[str, ...] = ()  # the run's gates the user holds the role for (``gate_key``): one decision
    # decides them all


@dataclass(frozen=True)
class Flash:
    ok: bool
    text: str


def gate_key(approval: Any) -> str:
    """One pending gate as a form names it: ``step:gate:requested-at`` (one escalation can gate several steps)."""
    return f"{approval.step}:{approval.gate}:{approval.requested_at.isoformat()}"


def gates_text(keys: Iterable[str]) -> str:
    """``gate G at step S, ...`` of ``gate_key`` values (a value not in that form, as it is)."""
    shown = []
    for key in sorted(keys):
        step, _, rest = key.partition(":")
        gate = rest.partition(":")[0]
        shown.append(f"gate {gate} at step {step}" if gate else key)
    return ", ".join(shown)


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _ts(t: datetime | None) -> str:
    return t.isoformat(sep=" ", timespec="seconds") + "Z" if t else "none"


def _page(prefix: str, title: str, body: str, user: str | None = None, csrf: str | None = None) -> str:
    who = ""
    if user is not None and csrf is not None:
        who = (f"<form class='signout' method='post' action='{_e(prefix)}/logout'>"
               f"<span>Signed in as <strong>{_e(user)}</strong></span>"
               f"<input type='hidden' name='csrf' value='{_e(csrf)}'>"
               f"<button type='submit'>Sign out</button></form>")
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_e(title)}</title><link rel='stylesheet' href='{_e(prefix)}/inbox.css'></head>"
            f"<body><header><h1>policyengine approvals</h1>{who}</header><main>{body}</main></body></html>")


def login_page(prefix: str, message: str | None = None) -> str:
    note = f"<p class='flash error' role='alert'>{_e(message)}</p>" if message else ""
    body = (f"<h2>Sign in</h2>{note}"
            f"<form method='post' action='{_e(prefix)}/login' class='signin'>"
            "<label for='token'>Sign-in token</label>"
            "<input id='token' name='token' type='password' autocomplete='off' required>"
            "<button type='submit'>Sign in</button></form>"
            "<p class='hint'>Ask the administrator for a token: "
            "<code>policyengine inbox token --user YOUR_ID --db RUNS_DB</code>.</p>")
    return _page(prefix, "Sign in · policyengine approvals", body)


def error_page(prefix: str, status: int, message: str) -> str:
    return _page(prefix, f"{status} · policyengine approvals",
                 f"<h2>{status}</h2><p class='flash error' role='alert'>{_e(message)}</p>"
                 f"<p><a href='{_e(prefix)}/'>Back to the inbox</a></p>")


def inbox_page(prefix: str, user: str, name: str, roles: tuple[str, ...], csrf: str, items: list[PendingItem],
               flashes: list[Flash], db: str, problem: str | None = None) -> str:
    parts = [f"<p class='whoami'>{_e(name)} · roles: {_e(', '.join(roles) or 'none')} · runs in "
             f"<code>{_e(db)}</code></p>"]
    for f in flashes:
        parts.append(f"<p class='flash {'ok' if f.ok else 'error'}' role='status'>{_e(f.text)}</p>")
    if problem is not None:
        parts.append(f"<p class='flash error' role='alert'>{_e(problem)}</p>")
    decidable = sum(1 for i in items if not i.own_run and not i.overdue)
    parts.append(f"<h2>Pending approvals <span class='count'>{len(items)}</span></h2>")
    if not items and problem is None:
        parts.append("<p class='empty'>Nothing waits for you.</p>")
    elif items:
        parts.append(f"<p class='hint'>{decidable} you may decide now.</p>")
    ordered = sorted(items, key=lambda i: (i.own_run or i.overdue))  # what the user may decide first (stable)
    parts += [_item(prefix, csrf, item) for item in ordered]
    return _page(prefix, f"Inbox ({len(items)}) · policyengine approvals", "".join(parts), user, csrf)


def _item(prefix: str, csrf: str, item: PendingItem) -> str:
    state = ("overdue" if item.overdue else "yours" if item.own_run else "open")
    meta = [("Run", f"<code>{_e(item.run_id)}</code>"), ("Workflow", _e(item.workflow)),
            ("Item", _e(item.item_id or "")), ("Requested by", _e(item.requested_by)),
            ("Step", _e(item.step)), ("Gate", f"<code>{_e(item.gate)}</code>"), ("Role needed", _e(item.role)),
            ("Requested at", _e(_ts(item.requested_at))),
            ("Deadline", _e(_ts(item.deadline_at)) + (" <strong class='late'>(passed)</strong>" if item.overdue
                                                     else "")),
            ("If nobody decides", _e(item.on_timeout))]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in meta)
    reasons = "".join(
        f"<tr><td><code>{_e(r.get('rule'))}</code></td><td>{_e(r.get('message'))}</td>"
        f"<td class='where'>{_e(r.get('file'))}:{_e(r.get('line'))}</td></tr>" for r in item.reasons)
    reasons_table = (f"<table class='reasons'><thead><tr><th>Rule</th><th>Reason</th><th>File:line</th></tr></thead>"
                     f"<tbody>{reasons}</tbody></table>" if reasons else "<p class='hint'>No recorded reasons.</p>")
    steps = "".join(f"<li><code>{_e(s)}</code> {_e(st)}{(' · ' + _e(eff)) if eff else ''}</li>"
                    for s, st, eff in item.steps)
    request = (f"<pre class='request'>{_e(json.dumps(item.request, indent=2, sort_keys=True))}</pre>"
               if item.request is not None else "<p class='hint'>The request is not in the audit log.</p>")
    if item.overdue:
        action = ("<p class='flash error'>The deadline has passed: this approval can no longer be decided; "
                  "the next writing command records it as expired.</p>")
    elif item.own_run:
        action = ("<p class='flash error'>You requested this run: four-eyes forbids you to decide it.</p>")
    else:
        action = (f"<form method='post' action='{_e(prefix)}/decide' class='decide'>"
                  f"<input type='hidden' name='csrf' value='{_e(csrf)}'>"
                  f"<input type='hidden' name='run_id' value='{_e(item.run_id)}'>"
                  f"<input type='hidden' name='gates' value='{_e(','.join(item.decides))}'>"
                  + (f"<p class='hint'>Approve or Reject decides every gate of this run waiting for you: "
                     f"{_e(gates_text(item.decides))}.</p>"
                     if len(item.decides) > 1 else "") +
                  f"<label for='note-{_e(item.run_id)}'>Comment (kept in the audit record)</label>"
                  f"<textarea id='note-{_e(item.run_id)}' name='note' rows='2' maxlength='2000'></textarea>"
                  "<div class='buttons'>"
                  "<button type='submit' name='action' value='approve' class='approve'>Approve</button>"
                  "<button type='submit' name='action' value='reject' class='reject'>Reject</button>"
                  "</div></form>")
    return (f"<section class='approval {state}' id='run-{_e(item.run_id)}'>"
            f"<h3>{_e(item.workflow)} · <code>{_e(item.run_id)}</code></h3>"
            f"<dl class='meta'>{dl}</dl><h4>Why it needs you</h4>{reasons_table}"
            f"<details open><summary>The request (as the audit log holds it)</summary>{request}</details>"
            + (f"<details><summary>Steps so far</summary><ul class='steps'>{steps}</ul></details>" if steps else "")
            + f"{action}</section>")
