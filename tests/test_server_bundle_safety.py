"""What `serve --bundle/--rules` refuses, and that a refused reload never stops the next one.

A bundle's policy is exactly the signed files in it; a file at the bundle path
that is huge, not a regular file, a decompression bomb or an older signed
bundle is refused while the old policy keeps serving; the watch survives any
error; and a rule file rewritten in place is activated only once it has settled.
"""

from __future__ import annotations

import io
import json
import os
import signal
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_process import policyengine
from server_process import Server, audit_records

from policyengine.audit import generate_key
from policyengine.audit.keys import SigningKey
from policyengine.engine import load_policy
from policyengine.server import bundles
from policyengine.server.bundles import BundleError, build_bundle, verify_bundle
from policyengine.server.policy_source import PolicyHolder

ALLOW_ALL = ('package app\nowner "t@example.com"\n\nrole reader\n\n'
             'rule readers\n    allow role reader to read dataset "d/*"\n    because "readers read"\n')
REVOKE = '\nrule no_secret\n    deny role reader to read dataset "d/secret"\n    because "revoked"\n'
SECRET = {"principal": {"id": "alice", "roles": ["reader"]}, "action": "read",
          "resource": {"kind": "dataset", "id": "d/secret"}}
NON_EU = ('package app\nowner "t@example.com"\n\nimport common.regions\n\nrole reader\n\n'
          'rule readers_non_eu\n    allow role reader to read dataset "d/*"\n    unless data.origin in EU\n'
          '    because "EU-origin data stays out of reach"\n')
REGIONS = 'package common.regions\nowner "x@example.com"\n\nconst EU = ["DE", "FR"]\n'


def _folder(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "app.policy").write_text(text)
    return folder


def _bundle(tmp_path: Path, key: SigningKey, name: str, text: str) -> Path:
    out = tmp_path / f"{name}.tar.gz"
    build_bundle([_folder(tmp_path, name, text)], key, out)
    return out


def _put(source: Path, target: Path) -> None:
    """Replace ``target`` atomically with a copy of ``source``, as a deployment would."""
    partial = target.with_name(target.name + ".new")
    partial.write_bytes(source.read_bytes())
    os.replace(partial, target)


def _effect(server: Server) -> str:
    return server.post("/v1/decide", SECRET).json()["effect"]


def _hash(server: Server) -> str:
    return server.client.get("/v1/policy").json()["policy_hash"]


def _activations(db: Path) -> list[dict]:
    return [p for e, p in audit_records(db).values() if e == "policy_activated"]


def _refusals(server: Server) -> str:
    metrics = server.client.get("/metrics").text
    return next((line for line in metrics.splitlines() if 'reloads_total{outcome="refused"}' in line), "none")


# --- a bundle's policy is exactly the signed files in it -----------------------------------------

def _unchecked_bundle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, key: SigningKey, name: str) -> Path:
    """A signed bundle whose rules import common.regions without holding it (`bundle build` refuses to make one)."""
    with monkeypatch.context() as patch:
        patch.setattr(bundles, "_check_self_contained", lambda members, origins: None, raising=False)
        return _bundle(tmp_path, key, name, NON_EU)


def _plant_regions(folder: Path) -> None:
    """What any local user can write in the shared temporary folder the bundle is extracted under."""
    (folder / "common").mkdir(parents=True)
    (folder / "common" / "regions.policy").write_text(
        'package common.regions\nowner "attacker@example.com"\n\nconst EU = ["nowhere"]\n')


def test_serve_refuses_to_start_on_a_bundle_that_imports_a_package_it_does_not_hold(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key(tmp_path / "bundle.key")
    _put(_unchecked_bundle(monkeypatch, tmp_path, key, "team"), tmp_path / "bundle.tar.gz")
    shared_tmp = tmp_path / "shared-tmp"
    _plant_regions(shared_tmp)
    monkeypatch.setenv("TMPDIR", str(shared_tmp))  # the server extracts the bundle under it
    with pytest.raises(RuntimeError) as refused:
        Server(tmp_path, "--bundle", "bundle.tar.gz", "--bundle-pubkey", "bundle.key.pub.pem")
    lines = [line for line in str(refused.value).splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert "rules/app.policy imports 'common.regions', which the bundle does not hold" in lines[0]


def test_a_reload_of_a_bundle_that_imports_a_package_it_does_not_hold_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key(tmp_path / "bundle.key")
    _put(_bundle(tmp_path, key, "v1", ALLOW_ALL + REVOKE), tmp_path / "bundle.tar.gz")
    shared_tmp = tmp_path / "shared-tmp"
    _plant_regions(shared_tmp)
    monkeypatch.setenv("TMPDIR", str(shared_tmp))
    team = _unchecked_bundle(monkeypatch, tmp_path, key, "team")
    with Server(tmp_path, "--bundle", "bundle.tar.gz", "--bundle-pubkey", "bundle.key.pub.pem",
                "--watch-interval", "0") as running:
        first = _hash(running)
        _put(team, tmp_path / "bundle.tar.gz")
        running.proc.send_signal(signal.SIGHUP)
        line = running.wait_for_line("refused")
        assert "imports 'common.regions', which the bundle does not hold" in line
        assert _hash(running) == first and _effect(running) == "deny"
        assert _refusals(running).endswith(" 1.0")
    assert len(_activations(running.db)) == 1


def test_bundle_build_refuses_rules_that_import_a_package_from_outside_what_it_packs(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "bundle.key")
    project = tmp_path / "project"
    project.mkdir()
    team = _folder(project, "team", NON_EU)
    (project / "common").mkdir()
    (project / "common" / "regions.policy").write_text(REGIONS)
    load_policy([team])  # loads: the import is found in the folder above
    with pytest.raises(BundleError) as refused:
        build_bundle([team], key, tmp_path / "b.tar.gz")
    assert str(refused.value) == (
        f"{team / 'app.policy'}: imports common.regions, which the bundle would not hold (it would come from "
        f"{(project / 'common' / 'regions.policy').resolve()}, outside what is packed); bundle the folder that holds both")
    assert not (tmp_path / "b.tar.gz").exists()
    build_bundle([project], key, tmp_path / "b.tar.gz")  # the folder holding both: packed, and the import resolves
    assert set(verify_bundle(tmp_path / "b.tar.gz", key.public).files) == \
        {"rules/team/app.policy", "rules/common/regions.policy"}


@pytest.mark.parametrize("where", ["bundle.key", "keys/old_signer.pem"])
def test_bundle_build_refuses_to_pack_a_private_key_kept_beside_the_rules(tmp_path: Path, where: str) -> None:
    rules = _folder(tmp_path, "rules", REGIONS)
    key = generate_key(rules / where) if where == "bundle.key" else generate_key(tmp_path / "bundle.key")
    if where != "bundle.key":
        (rules / "keys").mkdir()
        generate_key(rules / where)
    with pytest.raises(BundleError, match=f"{rules / where}: holds a private key; a bundle is copied to every server"):
        build_bundle([rules], key, tmp_path / "b.tar.gz")
    assert not (tmp_path / "b.tar.gz").exists()


def test_bundle_build_refuses_a_folder_it_cannot_list_rather_than_leave_its_rules_out(tmp_path: Path) -> None:
    """``rules/denies`` holds a deny and cannot be listed: it was passed over as if empty, and the signed bundle
    served without the deny."""
    rules = _folder(tmp_path, "rules", REGIONS)
    (rules / "denies").mkdir()
    (rules / "denies" / "deny.policy").write_text('package docs.deny\nrule no_docs\n    deny any to read dataset "d/*"\n')
    generate_key(tmp_path / "bundle.key")
    (rules / "denies").chmod(0)
    try:
        proc = policyengine("bundle", "build", "rules", "--key", "bundle.key", "--out", "b.tar.gz", cwd=tmp_path,
                            bound_by_permissions=True)
    finally:
        (rules / "denies").chmod(0o755)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "rules/denies:1:1: error[load]: cannot list this folder: Permission denied" in proc.stderr
    assert not (tmp_path / "b.tar.gz").exists()


def test_rules_mode_keeps_the_language_lookup_of_imports_in_folders_above_and_the_shipped_rules(
        tmp_path: Path) -> None:
    """`--rules` (any ordinary load) finds an import in the nearest folder above that has it, else in the shipped rules."""
    above, alone = tmp_path / "above", tmp_path / "alone"
    above.mkdir()
    alone.mkdir()
    (above / "common").mkdir()
    (above / "common" / "regions.policy").write_text(REGIONS)
    from_above = load_policy([_folder(above, "team", NON_EU)])
    from_shipped = load_policy([_folder(alone, "team", NON_EU)])
    assert str(above / "common" / "regions.policy") in map(str, from_above.files)
    assert any(Path(f).parts[-3:] == ("rules", "common", "regions.policy") and not f.startswith(str(tmp_path))
               for f in from_shipped.files)


# --- what sits at the bundle path ------------------------------------------------------------------

def _sparse(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        handle.truncate(size)  # takes no disk space


def test_a_file_larger_than_the_limit_is_refused_by_its_size_unread(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "bundle.key")
    _sparse(tmp_path / "huge.tar.gz", 1 << 40)  # 1 TiB: reading it would not fit in memory
    with pytest.raises(BundleError, match=f"bundle larger than {bundles.MAX_BUNDLE_BYTES} bytes"):
        verify_bundle(tmp_path / "huge.tar.gz", key.public)


def test_a_folder_at_the_bundle_path_is_refused_as_not_a_regular_file(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "bundle.key")
    (tmp_path / "b.tar.gz").mkdir()
    with pytest.raises(BundleError, match="not a regular file"):
        verify_bundle(tmp_path / "b.tar.gz", key.public)


def test_any_error_of_a_load_is_a_refusal_and_the_old_policy_keeps_serving(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key(tmp_path / "bundle.key")
    _put(_bundle(tmp_path, key, "v1", ALLOW_ALL + REVOKE), tmp_path / "bundle.tar.gz")
    holder = PolicyHolder(bundle=str(tmp_path / "bundle.tar.gz"), bundle_key=key.public)
    try:
        assert holder.reload("startup", force=True) == "activated"
        first = holder.active

        def out_of_memory(path: object, public: object) -> None:
            raise MemoryError

        monkeypatch.setattr("policyengine.server.policy_source.verify_bundle", out_of_memory)
        assert holder.reload("sighup", force=True) == "refused: MemoryError"
        assert holder.active is first
    finally:
        holder.close()


BREAKERS: list[tuple[str, Callable[[Path], None], str]] = [
    ("a sparse 1 TiB file", lambda path: _sparse(path, 1 << 40), "bundle larger than"),
    ("a FIFO", lambda path: os.mkfifo(path), "not a regular file"),
]


@pytest.mark.parametrize(("name", "make", "refusal"), BREAKERS, ids=[b[0] for b in BREAKERS])
def test_a_file_at_the_bundle_path_that_breaks_reading_is_refused_and_the_next_bundle_activates(
        tmp_path: Path, name: str, make: Callable[[Path], None], refusal: str) -> None:
    key = generate_key(tmp_path / "bundle.key")
    bundle = tmp_path / "bundle.tar.gz"
    _put(_bundle(tmp_path, key, "v1", ALLOW_ALL), bundle)
    v2 = _bundle(tmp_path, key, "v2", ALLOW_ALL + REVOKE)
    with Server(tmp_path, "--bundle", "bundle.tar.gz", "--bundle-pubkey", "bundle.key.pub.pem",
                "--watch-interval", "0.1") as running:
        assert _effect(running) == "allow"
        make(tmp_path / "breaker")
        os.replace(tmp_path / "breaker", bundle)
        assert refusal in running.wait_for_line("refused")
        _put(v2, bundle)  # the watch goes on
        running.wait_for_line("activated \\(change")
        assert _effect(running) == "deny"
        assert _refusals(running).endswith(" 1.0")
        assert running.stop() == 0  # SIGTERM still stops it
    assert [a["reason"] for a in _activations(running.db)] == ["startup", "change"]


def test_a_rule_file_whose_name_is_not_utf8_is_refused_and_later_edits_activate(tmp_path: Path) -> None:
    rules = _folder(tmp_path, "rules", ALLOW_ALL)
    with Server(tmp_path, "--rules", "rules", "--watch-interval", "0.1") as running:
        assert _effect(running) == "allow"
        stray = rules / os.fsdecode(b"notes-\xff.policy")
        stray.write_text('package extra\nowner "x@example.com"\n')
        line = running.wait_for_line("refused")
        assert "notes-\\xff.policy" in line and "name is not UTF-8" in line
        stray.unlink()
        (rules / "app.policy").write_text(ALLOW_ALL + REVOKE)
        running.wait_for_line("activated \\(change")
        assert _effect(running) == "deny"


# --- decompression bombs: bounded before the signature is checked ----------------------------------

def _tar(path: Path, members: list[tuple[str, bytes | int]]) -> None:
    """A gzip tar of ``members``; an int is a header size with no data behind it (a claim, never inflated)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, int):
                info.size = data
                tar.addfile(info)  # header only
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buffer.getvalue())


def _signed_head(key: SigningKey, files: dict[str, bytes]) -> list[tuple[str, bytes | int]]:
    import base64
    import hashlib

    manifest = json.dumps({"format": 1, "created": "2026-01-01T00:00:00.000000Z", "key_id": key.key_id,
                           "files": {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}}).encode()
    return [("manifest.json", manifest), ("manifest.sig", base64.b64encode(key.sign(manifest)))]


BOMBS: list[tuple[str, Callable[[SigningKey], list[tuple[str, bytes | int]]], str]] = [
    ("an unsigned rule file first", lambda key: [("rules/app.policy", 1 << 40)],
     "no manifest.json before the rule files"),
    ("a huge manifest", lambda key: [("manifest.json", 1 << 40)], "manifest.json larger than"),
    ("a signed file claiming 1 TiB", lambda key: [*_signed_head(key, {"rules/app.policy": b"x"}),
                                                  ("rules/app.policy", 1 << 40)], "rule files larger than"),
    ("an unlisted file after the signature", lambda key: [*_signed_head(key, {}), ("rules/extra.policy", 1 << 40)],
     "rules/extra.policy is in the bundle but not in the signed manifest"),
]


@pytest.mark.parametrize(("name", "members", "refusal"), BOMBS, ids=[b[0] for b in BOMBS])
def test_a_decompression_bomb_is_refused_from_its_headers_before_any_body_is_inflated(
        tmp_path: Path, name: str, members: Callable[[SigningKey], list[tuple[str, bytes | int]]],
        refusal: str) -> None:
    key = generate_key(tmp_path / "bundle.key")
    _tar(tmp_path / "b.tar.gz", members(key))
    with pytest.raises(BundleError, match=refusal):
        verify_bundle(tmp_path / "b.tar.gz", key.public)


# --- no going back to an older signed bundle -------------------------------------------------------

def test_an_older_signed_bundle_put_back_is_refused_and_a_rebuilt_one_activates(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "bundle.key")
    bundle = tmp_path / "bundle.tar.gz"
    old = _bundle(tmp_path, key, "v1", ALLOW_ALL)
    _put(_bundle(tmp_path, key, "v2", ALLOW_ALL + REVOKE), bundle)  # built after v1: revokes d/secret
    with Server(tmp_path, "--bundle", "bundle.tar.gz", "--bundle-pubkey", "bundle.key.pub.pem",
                "--watch-interval", "0") as running:
        active = running.client.get("/v1/policy").json()
        _put(old, bundle)
        running.proc.send_signal(signal.SIGHUP)
        line = running.wait_for_line("refused")
        assert f"bundle built at {verify_bundle(old, key.public).created} is older than the active bundle " \
               f"built at {active['bundle_created']}; rebuild it to roll back" in line
        assert _hash(running) == active["policy_hash"] and _effect(running) == "deny"
        build_bundle([tmp_path / "v1"], key, bundle)  # rolled back by rebuilding: newer, so it activates
        running.proc.send_signal(signal.SIGHUP)
        running.wait_for_line("activated \\(sighup")
        assert _effect(running) == "allow"


# --- --rules: a file rewritten in place is activated only once it has settled ----------------------

def test_a_rule_file_rewritten_in_place_is_not_activated_half_written(tmp_path: Path) -> None:
    rules = _folder(tmp_path, "rules", ALLOW_ALL + REVOKE)
    final = (ALLOW_ALL + REVOKE + '\nrule also_public\n    allow role reader to read dataset "p/*"\n'
             '    because "public"\n').encode()
    half = final[:final.index(b"rule no_secret")]  # parses, and lacks the deny
    with Server(tmp_path, "--rules", "rules", "--watch-interval", "1") as running:
        first = _hash(running)
        with (rules / "app.policy").open("wb") as handle:  # truncate, then two writes, as cp or scp do
            handle.write(half)
            handle.flush()
            running.wait_for_line("changed")  # a check saw the half-written file
            handle.write(final[len(half):])
        running.wait_for_line("activated \\(change")
        assert _effect(running) == "deny"
    activated = [a["policy_hash"] for a in _activations(running.db)]
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "app.policy").write_bytes(half)
    assert activated == [first, load_policy([rules]).policy_hash]
    assert load_policy([tmp_path / "half"]).policy_hash not in activated
