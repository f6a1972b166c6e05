"""What `serve --bundle` remembers across restarts and refusals, through its audit log.

A restart may not bring back a bundle older than the last one the log says was
activated (an operator override starts it and records the rollback), and every
refused bundle leaves a signed `policy_refused` record, not only a log line.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from child_process import refused_start
from server_process import Server, audit_records, verify
from services import free_port
from test_server_bundle_safety import ALLOW_ALL, REVOKE, _bundle, _effect, _put

from policyengine.audit import AuditError, generate_key
from policyengine.audit.keys import SigningKey
from policyengine.server.bundles import verify_bundle
from policyengine.server.policy_source import PolicyHolder

ALSO = '\nrule also_public\n    allow role reader to read dataset "p/*"\n    because "public"\n'
BUNDLE = ("--bundle", "bundle.tar.gz", "--bundle-pubkey", "bundle.key.pub.pem")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _events(db: Path, event: str) -> list[dict]:
    return [p for e, p in audit_records(db).values() if e == event]


def _serve_refused(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``serve`` expected to refuse to start (``refused_start``)."""
    command = [sys.executable, "-m", "policyengine", "serve", "--port", "0", "--db", "audit.duckdb",
               "--key", "audit.key", *args]
    return refused_start(command, cwd, "serve")


# --- a restart may not go back to an older signed bundle -------------------------------------------

RESTARTS: list[tuple[str, str, tuple[str, ...], str]] = [
    # (case, the bundle at the path when restarted, extra flags, expected: starts | refused | rollback)
    ("the same bundle", "v2", (), "starts"),
    ("a newer bundle", "v3", (), "starts"),
    ("an older bundle", "v1", (), "refused"),
    ("an older bundle with --allow-bundle-rollback", "v1", ("--allow-bundle-rollback",), "rollback"),
    ("a newer bundle with --allow-bundle-rollback", "v3", ("--allow-bundle-rollback",), "starts"),
]


@pytest.mark.parametrize(("case", "restart_on", "flags", "expected"), RESTARTS, ids=[r[0] for r in RESTARTS])
def test_a_restart_goes_back_to_an_older_bundle_only_with_the_override_and_records_it(
        tmp_path: Path, case: str, restart_on: str, flags: tuple[str, ...], expected: str) -> None:
    key = generate_key(tmp_path / "bundle.key")
    built = {"v1": _bundle(tmp_path, key, "v1", ALLOW_ALL),  # built in this order: v1 < v2 < v3
             "v2": _bundle(tmp_path, key, "v2", ALLOW_ALL + REVOKE),  # revokes d/secret
             "v3": _bundle(tmp_path, key, "v3", ALLOW_ALL + REVOKE + ALSO)}
    created = {name: verify_bundle(path, key.public).created for name, path in built.items()}
    bundle = tmp_path / "bundle.tar.gz"
    _put(built["v2"], bundle)
    with Server(tmp_path, *BUNDLE, "--watch-interval", "0") as first:
        assert _effect(first) == "deny"
    _put(built[restart_on], bundle)
    if expected == "refused":
        refused = _serve_refused(tmp_path, *BUNDLE, *flags)
        assert refused.returncode == 1, refused.stderr
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, refused.stderr
        assert f"bundle built at {created['v1']} is older than the last bundle activated in the audit log" in errors[0]
        assert f"built at {created['v2']}" in errors[0] and "--allow-bundle-rollback" in errors[0]
        assert "listening on" not in refused.stderr and "Traceback" not in refused.stderr
        assert [a["bundle_created"] for a in _events(first.db, "policy_activated")] == [created["v2"]]
        (record,) = _events(first.db, "policy_refused")  # the attempt is evidence too
        assert record["reason"] == "startup" and record["active"] is None
        assert record["bundle_sha256"] == _sha(bundle) and record["signer"] == key.key_id
        assert record["refusal"] == errors[0].removeprefix("error: ")
    else:
        with Server(tmp_path, *BUNDLE, "--watch-interval", "0", *flags) as again:
            assert _effect(again) == ("allow" if restart_on == "v1" else "deny")
        last = _events(first.db, "policy_activated")[-1]
        assert (last["reason"], last["bundle_created"]) == ("startup", created[restart_on])
        if expected == "rollback":
            assert last["rollback_from"] == {"bundle": "bundle.tar.gz", "bundle_sha256": _sha(built["v2"]),
                                             "bundle_created": created["v2"], "signer": key.key_id, "seq": 1,
                                             "log": "audit.duckdb"}
            assert any("rolled back from the bundle built at" in line for line in again.lines)
            with Server(tmp_path, *BUNDLE, "--watch-interval", "0"):  # v1 is now the last activated: fine
                pass
            assert _events(first.db, "policy_activated")[-1]["bundle_created"] == created["v1"]
        else:
            assert "rollback_from" not in last
        assert _events(first.db, "policy_refused") == []
    checked = verify(tmp_path, first.db, first.key)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_restart_reads_the_last_activation_across_rolled_segments(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "bundle.key")
    old = _bundle(tmp_path, key, "v1", ALLOW_ALL)
    _put(_bundle(tmp_path, key, "v2", ALLOW_ALL + REVOKE), tmp_path / "bundle.tar.gz")
    rolled = ("--roll-records", "2", "--no-access-log")
    with Server(tmp_path, *BUNDLE, *rolled) as first:
        for _ in range(5):  # the activation ends up in a sealed segment, several before the newest
            assert _effect(first) == "deny"
    assert len(list(tmp_path.glob("audit.*.duckdb"))) > 2
    _put(old, tmp_path / "bundle.tar.gz")
    refused = _serve_refused(tmp_path, *BUNDLE, *rolled)
    assert refused.returncode == 1 and "is older than the last bundle activated in the audit log" in refused.stderr


def _v2_at_the_bundle_path(tmp_path: Path) -> Path:
    """Build v1 (allows d/secret), then v2 (revokes it) and put v2 at the bundle path; return v1's file."""
    key = generate_key(tmp_path / "bundle.key")
    old = _bundle(tmp_path, key, "v1", ALLOW_ALL)
    _put(_bundle(tmp_path, key, "v2", ALLOW_ALL + REVOKE), tmp_path / "bundle.tar.gz")
    return old


def _layout(name: str) -> tuple[str, ...]:
    """The flags of one way to write --db audit.duckdb: one file, rolled segments, or a file per worker."""
    return {"one file": (), "rolled": ("--roll-records", "100"),
            "two workers": ("--workers", "2", "--port", str(free_port()))}[name]


LAYOUTS = [("one file", "rolled"), ("rolled", "one file"), ("one file", "two workers"), ("two workers", "one file"),
           ("two workers", "rolled")]


@pytest.mark.parametrize(("before", "after"), LAYOUTS, ids=[f"{b} then {a}" for b, a in LAYOUTS])
def test_a_restart_that_writes_the_log_another_way_is_held_to_the_last_bundle_all_the_same(
        tmp_path: Path, before: str, after: str) -> None:
    """Adding or dropping --roll-* or --workers changes which file is written, not what was activated."""
    old = _v2_at_the_bundle_path(tmp_path)
    with Server(tmp_path, *BUNDLE, *_layout(before)) as first:
        assert _effect(first) == "deny"
    _put(old, tmp_path / "bundle.tar.gz")
    refused = _serve_refused(tmp_path, *BUNDLE, *_layout(after))
    assert refused.returncode == 1, refused.stderr
    assert "is older than the last bundle activated in the audit log" in refused.stderr


def test_workers_restarted_on_their_own_files_all_start(tmp_path: Path) -> None:
    """The supervisor reads the history once, before any worker holds its file: a worker that read another's
    file would find it in use (or keep it from opening its own)."""
    _v2_at_the_bundle_path(tmp_path)
    for _ in range(3):  # the first start creates the workers' files; the restarts find them
        with Server(tmp_path, *BUNDLE, *_layout("two workers"), "--no-access-log") as running:
            for worker in (0, 1):
                running.wait_for_line(rf"listening on .*audit\.worker{worker}\.duckdb")
            assert not [line for line in running.lines if line.startswith("error:")]
        assert running.stop() == 0, "\n".join(running.lines)


def test_a_rollback_started_with_another_layout_is_the_last_bundle_for_the_next_start(tmp_path: Path) -> None:
    """Of several files of --db, the activation written last counts, not the newest bundle ever seen."""
    old = _v2_at_the_bundle_path(tmp_path)
    with Server(tmp_path, *BUNDLE):
        pass
    _put(old, tmp_path / "bundle.tar.gz")
    with Server(tmp_path, *BUNDLE, *_layout("rolled"), "--allow-bundle-rollback") as rolled_back:
        assert _effect(rolled_back) == "allow"
    with Server(tmp_path, *BUNDLE) as again:  # v1 is the last activated now, in the segments: no flag needed
        assert _effect(again) == "allow"


def test_a_restart_is_held_to_the_last_bundle_even_after_a_start_on_rules(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "bundle.key")
    old = _bundle(tmp_path, key, "v1", ALLOW_ALL)
    _put(_bundle(tmp_path, key, "v2", ALLOW_ALL + REVOKE), tmp_path / "bundle.tar.gz")
    with Server(tmp_path, *BUNDLE):
        pass
    with Server(tmp_path, "--rules", "v1"):  # a --rules activation says nothing about how old a bundle may be
        pass
    _put(old, tmp_path / "bundle.tar.gz")
    refused = _serve_refused(tmp_path, *BUNDLE)
    assert refused.returncode == 1 and "is older than the last bundle activated in the audit log" in refused.stderr


# --- a refused reload is recorded ------------------------------------------------------------------

def _tampered(tmp_path: Path, key: SigningKey) -> Path:
    """A signed bundle whose rule file was changed after signing (manifest and signature kept)."""
    signed = _bundle(tmp_path, key, "tampered", ALLOW_ALL + REVOKE)
    with tarfile.open(signed) as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar]  # type: ignore[union-attr]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            if info.name == "rules/app.policy":
                data = ALLOW_ALL.encode()  # the revocation cut out
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "tampered-out.tar.gz"
    out.write_bytes(buffer.getvalue())
    return out


def _unsigned(tmp_path: Path, key: SigningKey) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("rules/app.policy")
        info.size = len(ALLOW_ALL)
        tar.addfile(info, io.BytesIO(ALLOW_ALL.encode()))
    out = tmp_path / "unsigned.tar.gz"
    out.write_bytes(buffer.getvalue())
    return out


def _garbage(tmp_path: Path, key: SigningKey) -> Path:
    out = tmp_path / "garbage.tar.gz"
    out.write_bytes(b"this is not a gzip tar\n")
    return out


def _other_signer(tmp_path: Path, key: SigningKey) -> Path:
    return _bundle(tmp_path, generate_key(tmp_path / "other.key"), "other", ALLOW_ALL)


BAD: list[tuple[str, Callable[[Path, SigningKey], Path], str, bool]] = [
    # (case, makes the file dropped in, what the refusal says, whether the signer is known)
    ("tampered after signing", _tampered, "rules/app.policy does not match its hash in the signed manifest", True),
    ("unsigned", _unsigned, "no manifest.json before the rule files; not a signed bundle", False),
    ("signed by another key", _other_signer, "signature does not verify with key", False),
    ("unparseable", _garbage, "not a gzip tar bundle", False),
    ("older than the active one", lambda tmp_path, key: tmp_path / "v1.tar.gz",
     "is older than the active bundle built at", True),
]


@pytest.mark.parametrize(("case", "make", "says", "signer_known"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_bundle_dropped_in_while_running_is_refused_and_recorded_as_policy_refused(
        tmp_path: Path, case: str, make: Callable[[Path, SigningKey], Path], says: str, signer_known: bool) -> None:
    key = generate_key(tmp_path / "bundle.key")
    _bundle(tmp_path, key, "v1", ALLOW_ALL)  # older than v2
    bundle = tmp_path / "bundle.tar.gz"
    _put(_bundle(tmp_path, key, "v2", ALLOW_ALL + REVOKE), bundle)
    bad = make(tmp_path, key)
    with Server(tmp_path, *BUNDLE, "--watch-interval", "0.1") as running:
        active = running.client.get("/v1/policy").json()
        _put(bad, bundle)
        line = running.wait_for_line("refused")
        assert says in line and "still serving" in line
        assert _effect(running) == "deny"
        assert running.stop() == 0
    (record,) = _events(running.db, "policy_refused")
    assert record["reason"] == "change" and record["source"] == "bundle" and record["bundle"] == "bundle.tar.gz"
    assert record["bundle_sha256"] == _sha(bad)
    assert says in record["refusal"] and "\n" not in record["refusal"]
    assert record["signer"] == (key.key_id if signer_known else None)
    assert record["active"] == {k: active[k] for k in ("policy_hash", "bundle", "bundle_sha256",
                                                       "bundle_created", "signer")}
    assert len(_events(running.db, "policy_activated")) == 1
    checked = verify(tmp_path, running.db, running.key)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_refusal_the_audit_log_cannot_take_still_refuses_and_says_so(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "bundle.key")
    bundle = tmp_path / "bundle.tar.gz"
    _put(_bundle(tmp_path, key, "v1", ALLOW_ALL + REVOKE), bundle)
    seen: list[Any] = []

    def broken_log(refusal: Any) -> None:
        seen.append(refusal)
        raise AuditError("audit.duckdb: the audit log failed earlier (disk full)")

    holder = PolicyHolder(bundle=str(bundle), bundle_key=key.public, on_refuse=broken_log)
    try:
        assert holder.reload("startup", force=True) == "activated"
        first = holder.active
        _put(_garbage(tmp_path, key), bundle)
        outcome = holder.reload("sighup", force=True)
        assert outcome.startswith("refused: ") and "not a gzip tar bundle" in outcome.splitlines()[0]
        assert "not recorded in the audit log: AuditError: audit.duckdb: the audit log failed earlier" \
            in outcome.splitlines()[0]
        assert holder.active is first  # refusing is still right: the old policy keeps serving
        assert [r.payload()["bundle_sha256"] for r in seen] == [_sha(bundle)]
    finally:
        holder.close()
