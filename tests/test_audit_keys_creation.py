"""Signing keys are created atomically: no race, no partial file, no write through a symlink.

Real Ed25519 keys in tmp_path; the race is run by real concurrent processes.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from policyengine.audit import AuditError, AuditLog, generate_key, load_private_key
from policyengine.audit.keys import public_key_path

from tests.cli_process import policyengine

RACE = ("import sys; from policyengine.audit.keys import generate_key; "
        "print(generate_key(sys.argv[1], exist_ok=True).key_id)")


def test_concurrent_first_time_creation_gives_everyone_the_same_key(tmp_path):
    for round_ in range(3):
        path = tmp_path / f"k{round_}.key"
        procs = [subprocess.Popen([sys.executable, "-c", RACE, str(path)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        results = [p.communicate(timeout=60) for p in procs]
        assert all(p.returncode == 0 for p in procs), [err for _, err in results]
        ids = {out.strip() for out, _ in results}
        assert ids == {load_private_key(path).key_id}
        assert [f.name for f in tmp_path.iterdir() if f.name.endswith(".tmp")] == []


def test_a_symlinked_public_key_path_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    path = tmp_path / "sign.key"
    public_key_path(path).symlink_to(victim)
    key = generate_key(path)
    assert victim.read_text() == "precious"
    assert not public_key_path(path).is_symlink() and key.public.pem == public_key_path(path).read_text()


def test_a_symlink_at_the_private_key_path_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    path = tmp_path / "sign.key"
    path.symlink_to(victim)
    with pytest.raises(AuditError, match="already exists"):
        generate_key(path)
    assert victim.read_text() == "precious"


def test_a_full_disk_leaves_no_key_behind_and_regeneration_works(tmp_path, monkeypatch):
    path = tmp_path / "sign.key"
    real_fdopen = os.fdopen

    class FullDisk:
        """A file on a full disk: opening works, writing fails with ENOSPC."""

        def __init__(self, fd, *args, **kwargs):
            self.file = real_fdopen(fd, *args, **kwargs)

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    monkeypatch.setattr(os, "fdopen", FullDisk)
    with pytest.raises(AuditError, match="cannot create key file .No space left on device"):
        generate_key(path)
    monkeypatch.undo()
    assert sorted(f.name for f in tmp_path.iterdir()) == []
    assert generate_key(path).key_id == load_private_key(path).key_id


def test_an_empty_key_left_by_an_older_version_is_replaced(tmp_path):
    path = tmp_path / "sign.key"
    path.write_bytes(b"")
    key = generate_key(path)
    assert load_private_key(path).key_id == key.key_id


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o640, True), (0o644, True), (0o400, False)])
def test_a_private_key_others_can_read_is_used_with_a_warning(tmp_path, capsys, mode, warned):
    path = tmp_path / "sign.key"
    generate_key(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    os.chmod(path, mode)
    load_private_key(path)
    err = capsys.readouterr().err
    assert ("readable by other users" in err) is warned
    if warned:
        assert f"mode {mode:04o}" in err and "chmod 600" in err


KEY_READERS = {  # every command that reads a key file the operator names: (arguments, which key is the FIFO)
    "audit verify --pubkey": ("audit", "verify", "--db", "audit.duckdb", "--pubkey", "{fifo}"),
    "keys vkey --pubkey": ("keys", "vkey", "--pubkey", "{fifo}", "--name", "example.com/log"),
    "keys rotate --key": ("keys", "rotate", "--db", "audit.duckdb", "--key", "{fifo}", "--new-key", "next.key"),
    "keys sign-approval --key": ("keys", "sign-approval", "--key", "{fifo}", "--as", "alice", "--gate", "g",
                                 "--run-id", "r1"),
}


@pytest.mark.parametrize("command", KEY_READERS)
def test_a_fifo_named_as_a_key_is_refused_not_waited_on(tmp_path, command):
    """A FIFO at a key path held the command for ever (reading it waits for a writer): it is not a key file."""
    key = generate_key(tmp_path / "policyengine.key")
    generate_key(tmp_path / "next.key")
    with AuditLog(tmp_path / "audit.duckdb", key) as log:
        log.append("decision", payload={"i": 1})
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)
    result = policyengine(*(a.format(fifo=fifo) for a in KEY_READERS[command]), cwd=tmp_path)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.strip().splitlines() == [f"error: {fifo}: not a regular file; refusing it as a "
                                                  f"{'public' if 'pubkey' in command else 'signing'} key"]
