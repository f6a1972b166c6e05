"""Signed policy bundles and hot reload: verification table, `bundle build`, and a live server swapping policies."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from server_process import DENY, RULES, Server, audit_records, verify

from policyengine.audit import generate_key
from policyengine.server.bundles import BundleError, build_bundle, verify_bundle

EXTRA = ('package extra\n\nrule analysts_delete_invoices\n'
         '    allow role analyst to delete dataset "erp/invoices/*"\n    because "v2 lets analysts delete"\n')


def _rules_copy(tmp_path: Path, name: str = "rules", extra: bool = False) -> Path:
    target = tmp_path / name
    shutil.copytree(RULES, target)
    if extra:
        (target / "extra.policy").write_text(EXTRA)
    return target


def _rewrite(bundle: Path, change: Callable[[dict[str, bytes]], None]) -> None:
    """Rewrite the bundle's members through ``change`` (keeping manifest and signature as they were)."""
    with tarfile.open(bundle, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    change(members)
    with tarfile.open(bundle, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _add_symlink(bundle: Path) -> None:
    with tarfile.open(bundle, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar if m.isfile()]  # type: ignore[union-attr]
    with tarfile.open(bundle, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("rules/link.policy")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)


TAMPERING: list[tuple[str, Callable[[Path], None], str]] = [
    ("file edited", lambda b: _rewrite(b, lambda m: m.__setitem__(
        "rules/design_sample.policy", m["rules/design_sample.policy"] + b"\n# edit\n")),
     "rules/design_sample.policy does not match its hash"),
    ("file added", lambda b: _rewrite(b, lambda m: m.__setitem__("rules/extra.policy", EXTRA.encode())),
     "rules/extra.policy is in the bundle but not in the signed manifest"),
    ("file removed", lambda b: _rewrite(b, lambda m: m.pop("rules/common/regions.policy")),
     "rules/common/regions.policy is in the manifest but not in the bundle"),
    ("manifest edited", lambda b: _rewrite(b, lambda m: m.__setitem__("manifest.json", m["manifest.json"] + b" ")),
     "signature does not verify"),
    ("signature removed", lambda b: _rewrite(b, lambda m: m.pop("manifest.sig")), "no manifest.sig"),
    ("path escapes", lambda b: _rewrite(b, lambda m: m.__setitem__("../evil.policy", b"x")), "unsafe path"),
    ("symlink member", _add_symlink, "not a regular file"),
    ("not a tar", lambda b: b.write_bytes(b"hello"), "not a gzip tar bundle"),
]


@pytest.mark.parametrize(("name", "tamper", "message"), TAMPERING, ids=[t[0] for t in TAMPERING])
def test_a_tampered_bundle_is_refused_naming_what_is_wrong(tmp_path: Path, name: str,
                                                          tamper: Callable[[Path], None], message: str) -> None:
    key = generate_key(tmp_path / "bundle.key")
    bundle = tmp_path / "b.tar.gz"
    build_bundle([RULES], key, bundle)
    assert verify_bundle(bundle, key.public).key_id == key.key_id  # intact: verifies
    tamper(bundle)
    with pytest.raises(BundleError, match=message.replace(".", r"\.")):
        verify_bundle(bundle, key.public)


def test_a_bundle_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "b.tar.gz"
    build_bundle([RULES], generate_key(tmp_path / "other.key"), bundle)
    with pytest.raises(BundleError, match="signature does not verify"):
        verify_bundle(bundle, generate_key(tmp_path / "trusted.key").public)


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_bundle_build_writes_a_verifiable_bundle_and_refuses_rules_with_errors(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "bundle.key")
    built = _cli(tmp_path, "bundle", "build", str(RULES), "--key", "bundle.key", "--out", "b.tar.gz")
    assert built.returncode == 0, built.stderr
    verified = verify_bundle(tmp_path / "b.tar.gz", key.public)
    assert "rules/design_sample.policy" in verified.files and "rules/common/regions.policy" in verified.files
    broken = _rules_copy(tmp_path, "broken")
    (broken / "bad.policy").write_text("package bad\nrule oops\n    allow nobody\n")
    refused = _cli(tmp_path, "bundle", "build", str(broken), "--key", "bundle.key", "--out", "c.tar.gz")
    assert refused.returncode == 1 and "no bundle built" in refused.stderr
    assert not (tmp_path / "c.tar.gz").exists()


def _hash(server: Server) -> str:
    return server.client.get("/v1/policy").json()["policy_hash"]


def _wait_for_hash(server: Server, old: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = _hash(server)
        if current != old:
            return current
        time.sleep(0.05)
    raise AssertionError("the policy was not reloaded:\n" + "\n".join(server.lines))


@pytest.mark.slow
def test_a_changed_signed_bundle_is_swapped_in_under_load_without_a_failed_request(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "bundle.key")
    build_bundle([_rules_copy(tmp_path, "v1")], key, tmp_path / "b.tar.gz")
    with Server(tmp_path, "--bundle", "b.tar.gz", "--bundle-pubkey", "bundle.key.pub.pem", "--watch-interval", "0.2",
                "--no-access-log") as running:
        first = _hash(running)
        assert running.post("/v1/decide", DENY).json()["effect"] == "deny"
        failures: list[str] = []
        effects: list[str] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=running.url, timeout=30) as client:
                for _ in range(20_000):  # bounded; stopped once the new policy has answered
                    if stop.is_set():
                        return
                    answer = client.post("/v1/decide", json=DENY)
                    if answer.status_code != 200:
                        failures.append(f"{answer.status_code} {answer.text}")
                    else:
                        effects.append(answer.json()["effect"])

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        build_bundle([_rules_copy(tmp_path, "v2", extra=True)], key, tmp_path / "b.tar.gz")  # atomic replace
        second = _wait_for_hash(running, first)
        deadline = time.monotonic() + 30
        while "allow" not in effects[-50:] and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join(60)
        assert not failures
        assert effects[0] == "deny" and effects[-1] == "allow"
        switch = effects.index("allow")
        assert set(effects[:switch]) == {"deny"}  # concurrent answers may interleave around the swap
        policy = running.client.get("/v1/policy").json()
        assert policy["source"] == "bundle" and policy["signer"] == key.key_id
        assert "rules/extra.policy" in policy["files"]
    records = audit_records(running.db)
    activations = [p for e, p in records.values() if e == "policy_activated"]
    assert [(a["policy_hash"], a["signer"], a["reason"]) for a in activations] == \
        [(first, key.key_id, "startup"), (second, key.key_id, "change")]
    assert verify(tmp_path, running.db, running.key).returncode == 0


def test_a_tampered_bundle_is_refused_while_the_old_policy_keeps_serving(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "bundle.key")
    bundle = tmp_path / "b.tar.gz"
    build_bundle([_rules_copy(tmp_path, "v1")], key, bundle)
    with Server(tmp_path, "--bundle", "b.tar.gz", "--bundle-pubkey", "bundle.key.pub.pem",
                "--watch-interval", "0.1") as running:
        first = _hash(running)
        tampered = tmp_path / "t.tar.gz"
        build_bundle([_rules_copy(tmp_path, "v2", extra=True)], generate_key(tmp_path / "thief.key"), tampered)
        os.replace(tampered, bundle)
        running.wait_for_line("refused")
        assert _hash(running) == first
        assert running.post("/v1/decide", DENY).json()["effect"] == "deny"  # still the old policy
        metrics = running.client.get("/metrics").text
        assert 'policyengine_policy_reloads_total{outcome="refused"} 1.0' in metrics
    activations = [p for e, p in audit_records(running.db).values() if e == "policy_activated"]
    assert len(activations) == 1


def test_sighup_reloads_and_serve_rules_watches_the_files(tmp_path: Path) -> None:
    rules = _rules_copy(tmp_path)
    with Server(tmp_path, "--rules", "rules", "--watch-interval", "0") as running:
        first = _hash(running)
        (rules / "extra.policy").write_text(EXTRA)
        time.sleep(0.3)
        assert _hash(running) == first  # no watching at interval 0
        running.proc.send_signal(signal.SIGHUP)
        second = _wait_for_hash(running, first)
        assert running.post("/v1/decide", DENY).json()["effect"] == "allow"
    with Server(tmp_path, "--rules", "rules", "--watch-interval", "0.1", db="b.duckdb") as watching:
        assert _hash(watching) == second
        (rules / "extra.policy").unlink()
        assert _wait_for_hash(watching, second) == first
    reasons = [p["reason"] for e, p in audit_records(tmp_path / "audit.duckdb").values() if e == "policy_activated"]
    assert reasons == ["startup", "sighup"]


def test_rules_with_errors_are_refused_on_reload_and_the_old_policy_serves(tmp_path: Path) -> None:
    rules = _rules_copy(tmp_path)
    with Server(tmp_path, "--rules", "rules", "--watch-interval", "0.1") as running:
        first = _hash(running)
        (rules / "bad.policy").write_text("package bad\nrule oops\n    allow nobody\n")
        line = running.wait_for_line("refused")
        assert "bad.policy" in line
        assert _hash(running) == first
        assert json.loads(running.client.get("/ready").text)["status"] == "ready"


def test_an_activated_policy_is_frozen_out_of_the_cyclic_gc_and_a_replaced_one_is_collected(tmp_path: Path) -> None:
    """A full collection walking a big policy is a pause in some request's path: activation does it once."""
    import gc
    import weakref

    from policyengine.budgets import InMemoryLedger
    from policyengine.server.policy_source import PolicyHolder

    rules = _rules_copy(tmp_path)
    holder = PolicyHolder(rules=[str(rules)], ledger=InMemoryLedger())
    try:
        gc.unfreeze()
        assert holder.reload("startup", force=True) == "activated"
        first = weakref.ref(holder.active.policy)
        assert gc.get_freeze_count() > 0  # the live heap, policy included, is out of later collections
        (rules / "finance" / "zz_extra.policy").write_text('package finance.extra\n\nconst EXTRA = 1\n')
        assert holder.reload("change") == "settling"  # seen once: loaded when the next check sees it again
        assert holder.reload("change") == "activated"
        assert first() is None  # the replaced policy was not kept alive by the freeze
    finally:
        holder.close()
        gc.unfreeze()
