"""What `serve --bundle` remembers through its audit log: every refused bundle
leaves a signed `policy_refused` record, not only a log line.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from server_process import Server, audit_records, verify

from policyengine.audit import AuditError, generate_key
from policyengine.audit.keys import SigningKey
from policyengine.server.bundles import build_bundle
from policyengine.server.policy_source import PolicyHolder

ALLOW_ALL = ('package app\nowner "t@example.com"\n\nrole reader\n\n'
             'rule readers\n    allow role reader to read dataset "d/*"\n    because "readers read"\n')
REVOKE = '\nrule no_secret\n    deny role reader to read dataset "d/secret"\n    because "revoked"\n'
ALSO = '\nrule also_public\n    allow role reader to read dataset "p/*"\n    because "public"\n'
SECRET = {"principal": {"id": "alice", "roles": ["reader"]}, "action": "read",
          "resource": {"kind": "dataset", "id": "d/secret"}}
BUNDLE = ("--bundle", "bundle.tar.gz", "--bundle-pubkey", "bundle.key.pub.pem")


def _bundle(tmp_path: Path, key: SigningKey, name: str, text: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "app.policy").write_text(text)
    out = tmp_path / f"{name}.tar.gz"
    build_bundle([folder], key, out)
    return out


def _put(source: Path, target: Path) -> None:
    """Replace ``target`` atomically with a copy of ``source``, as a deployment would."""
    partial = target.with_name(target.name + ".new")
    partial.write_bytes(source.read_bytes())
    os.replace(partial, target)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _events(db: Path, event: str) -> list[dict]:
    return [p for e, p in audit_records(db).values() if e == event]


def _effect(server: Server) -> str:
    return server.post("/v1/decide", SECRET).json()["effect"]


def _serve_refused(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``serve`` expected to refuse to start: it must exit on its own (a server that starts fails the test)."""
    command = [sys.executable, "-m", "policyengine", "serve", "--port", "0", "--db", "audit.duckdb",
               "--key", "audit.key", *args]
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired as running:
        raise AssertionError(f"serve started instead of refusing:\n{running.stderr}") from None


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
