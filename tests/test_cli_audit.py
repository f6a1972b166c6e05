"""End to end: the `policyengine audit` and `keys` commands, run as a user runs them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from policyengine.audit import AuditLog, load_private_key


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo-like folder: default key files and a 120-record log in ./policyengine.duckdb."""
    cwd = tmp_path_factory.mktemp("cli")
    result = run(cwd, "keys", "generate")
    assert result.returncode == 0, result.stderr
    key = load_private_key(cwd / "policyengine.key")
    with AuditLog(cwd / "policyengine.duckdb", key, batch_size=25, checkpoint_every=25, flush_interval=0) as log:
        for i in range(1, 121):
            log.append("decision", actor="alice", workflow="invoice-exceptions",
                       payload={"request": {"i": i}, "decision": {"effect": "allow"}}, policy_hash="p1")
    return cwd


def test_keys_generate_writes_private_0600_and_public_pem(workdir: Path) -> None:
    assert stat.S_IMODE(os.stat(workdir / "policyengine.key").st_mode) == 0o600
    assert (workdir / "policyengine.key.pub.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    one_line_error(run(workdir, "keys", "generate"), "already exists")


def test_verify_with_defaults_prints_a_summary(workdir: Path) -> None:
    result = run(workdir, "audit", "verify")
    assert result.returncode == 0, result.stderr
    assert "OK, 120 records, 5 checkpoints, 1 key" in result.stdout
    report = json.loads(run(workdir, "audit", "verify", "--json").stdout)
    assert report["ok"] and report["records"] == 120 and report["failure"] is None


def test_anchor_proof_tail_and_exports_verify_on_their_own(workdir: Path, tmp_path: Path) -> None:
    anchor, proof = tmp_path / "anchor.json", tmp_path / "proof.json"
    assert run(workdir, "audit", "checkpoint", "--out", str(anchor)).returncode == 0
    assert json.loads(anchor.read_text())["tree_size"] == 120
    assert run(workdir, "audit", "verify", "--anchor", str(anchor)).returncode == 0

    assert run(workdir, "audit", "prove", "42", "--out", str(proof)).returncode == 0
    checked = run(workdir, "audit", "verify-proof", str(proof), "--pubkey", "policyengine.key.pub.pem")
    assert checked.returncode == 0 and "record 42 (decision) is included" in checked.stdout
    forged = json.loads(proof.read_text())
    forged["record"]["actor"] = "mallory"
    proof.write_text(json.dumps(forged))
    one_line_error(run(workdir, "audit", "verify-proof", str(proof)), "NOT included")

    tail = [json.loads(line) for line in run(workdir, "audit", "tail", "-n", "3").stdout.splitlines()]
    assert [r["seq"] for r in tail] == [118, 119, 120] and tail[0]["payload"]["request"] == {"i": 118}

    for fmt in ("jsonl", "parquet"):
        out = tmp_path / f"export.{fmt}"
        assert run(workdir, "audit", "export", "--format", fmt, "--out", str(out)).returncode == 0
        verified = run(workdir, "audit", "verify", "--export", str(out), "--anchor", str(anchor))
        assert verified.returncode == 0 and "120 records" in verified.stdout, verified.stderr

    jsonl = tmp_path / "export.jsonl"
    jsonl.write_text(jsonl.read_text().replace('"i":7}', '"i":8}', 1))
    one_line_error(run(workdir, "audit", "verify", "--export", str(jsonl)), "seq 7: modified")


def test_tampering_fails_with_seq_and_kind(workdir: Path, tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    db.write_bytes((workdir / "policyengine.duckdb").read_bytes())
    con = duckdb.connect(str(db))
    con.execute("DELETE FROM audit_log WHERE seq = 60").fetchall()
    con.close()
    one_line_error(run(workdir, "audit", "verify", "--db", str(db)), "seq 60: deleted")


@pytest.mark.parametrize(("statement", "expected"), [
    ("DELETE FROM audit_checkpoints", "seq 1: unsigned"),
    ("DELETE FROM audit_checkpoints WHERE tree_size = 120", "seq 101: unsigned"),
])
def test_deleted_checkpoints_fail_by_default(workdir: Path, tmp_path: Path, statement: str, expected: str) -> None:
    db = tmp_path / "c.duckdb"
    db.write_bytes((workdir / "policyengine.duckdb").read_bytes())
    con = duckdb.connect(str(db))
    con.execute(statement).fetchall()
    con.close()
    one_line_error(run(workdir, "audit", "verify", "--db", str(db)), expected, "not covered by any signed checkpoint")
    one_line_error(run(workdir, "audit", "verify", "--db", str(db), "--strict"), expected)  # old scripts still run
    report = json.loads(run(workdir, "audit", "verify", "--db", str(db), "--json").stdout)
    assert not report["ok"] and report["failure"]["kind"] == "unsigned"


def test_a_log_or_export_emptied_of_everything_signed_fails_in_one_line(workdir: Path, tmp_path: Path) -> None:
    """Every record and checkpoint deleted, or an export cut to its header: an auditor must not read OK."""
    db = tmp_path / "e.duckdb"
    db.write_bytes((workdir / "policyengine.duckdb").read_bytes())
    assert run(workdir, "audit", "export", "--format", "jsonl", "--out", str(tmp_path / "x.jsonl")).returncode == 0
    (tmp_path / "h.jsonl").write_text((tmp_path / "x.jsonl").read_text().splitlines(keepends=True)[0])
    con = duckdb.connect(str(db))
    con.execute("DELETE FROM audit_log; DELETE FROM audit_checkpoints; DELETE FROM audit_facts").fetchall()
    con.close()
    for source in (["--db", str(db)], ["--export", str(tmp_path / "h.jsonl")]):
        one_line_error(run(workdir, "audit", "verify", *source), "FAILED at seq 1: nothing signed",
                       "no checkpoint covers any record")
        answer = run(workdir, "audit", "verify", *source, "--json")
        report = json.loads(answer.stdout)
        assert answer.returncode == 1 and not report["ok"] and report["failure"]["kind"] == "nothing_signed"


def test_keys_rotate_then_verify_walks_the_chain(workdir: Path, tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    db.write_bytes((workdir / "policyengine.duckdb").read_bytes())
    assert run(tmp_path, "keys", "generate", "--out", "next.key").returncode == 0
    rotated = run(workdir, "keys", "rotate", "--db", str(db), "--new-key", str(tmp_path / "next.key"))
    assert rotated.returncode == 0 and "at seq 121" in rotated.stdout, rotated.stderr
    result = run(workdir, "audit", "verify", "--db", str(db))
    assert result.returncode == 0 and "121 records" in result.stdout


def test_bad_inputs_get_one_clear_line(workdir: Path, tmp_path: Path) -> None:
    (tmp_path / "text.duckdb").write_text("this is not a database\n" * 100)
    one_line_error(run(workdir, "audit", "verify", "--db", str(tmp_path / "text.duckdb")), "not a DuckDB database")
    duckdb.connect(str(tmp_path / "empty.duckdb")).close()
    one_line_error(run(workdir, "audit", "verify", "--db", str(tmp_path / "empty.duckdb")), "no audit_log")
    one_line_error(run(workdir, "audit", "tail", "--db", str(tmp_path / "empty.duckdb")), "not a policyengine audit log")
    one_line_error(run(workdir, "audit", "verify", "--db", str(tmp_path / "missing.duckdb")), "no such audit database")
    assert run(tmp_path, "keys", "generate", "--out", "other.key").returncode == 0
    one_line_error(run(workdir, "audit", "verify", "--pubkey", str(tmp_path / "other.key.pub.pem")),
                   "seq 1: unknown key")
    (tmp_path / "junk.pem").write_text("junk")
    one_line_error(run(workdir, "audit", "verify", "--pubkey", str(tmp_path / "junk.pem")), "junk.pem")
    one_line_error(run(tmp_path, "audit", "verify", "--db", str(workdir / "policyengine.duckdb")),
                   "no trusted public key")
    (tmp_path / "anchor.json").write_text("{}")
    one_line_error(run(workdir, "audit", "verify", "--anchor", str(tmp_path / "anchor.json")), "not a checkpoint anchor")
    one_line_error(run(workdir, "audit", "prove", "999"), "not covered")
    assert run(workdir, "audit", "prove", "abc").returncode == 2


def _meta_dropped(workdir: Path, tmp: Path) -> list[str]:
    db = tmp / "m.duckdb"
    db.write_bytes((workdir / "policyengine.duckdb").read_bytes())
    con = duckdb.connect(str(db))
    con.execute("DROP TABLE audit_meta")
    con.close()
    return ["--db", str(db)]


def _not_json(workdir: Path, tmp: Path) -> list[str]:
    (tmp / "x.jsonl").write_text("{\"type\": \"header\",\n")
    return ["--export", str(tmp / "x.jsonl")]


REFUSED = [
    # (case, the verify arguments, words of the error) : refused before any report exists
    ("no such database", lambda workdir, tmp: ["--db", str(tmp / "missing.duckdb")], "no such audit database"),
    ("audit_meta dropped", _meta_dropped, "has no audit_meta table"),
    ("an export that is not JSON", _not_json, "not JSON"),
    ("a folder of no segments", lambda workdir, tmp: ["--dir", str(tmp)], "no audit segments"),
]


@pytest.mark.parametrize(("case", "args", "words"), REFUSED, ids=[r[0] for r in REFUSED])
def test_verify_json_prints_a_refusal_as_json(workdir: Path, tmp_path: Path, case: str, args, words: str) -> None:
    """With --json stdout was empty on a refusal: a script reading `.ok` from it read nothing, not false."""
    done = run(workdir, "audit", "verify", *args(workdir, tmp_path), "--json")
    assert done.returncode == 1, done.stdout
    answer = json.loads(done.stdout)
    assert answer["ok"] is False and words in answer["error"], answer
    assert done.stderr.startswith("error: ") and words in done.stderr, done.stderr


@pytest.mark.parametrize("order", ["the log's key first", "another key first"])
def test_a_pubkey_file_with_several_keys_is_refused(workdir: Path, tmp_path: Path, order: str) -> None:
    """PEM readers take a file's first key and skip the rest: verify trusted one of two keys without a word
    (OK with the log's key first, unknown_key for a key the file holds with it second)."""
    assert run(tmp_path, "keys", "generate", "--out", "other.key").returncode == 0
    keys = [(workdir / "policyengine.key.pub.pem").read_text(), (tmp_path / "other.key.pub.pem").read_text()]
    both = tmp_path / "both.pem"
    both.write_text("".join(keys if order.startswith("the log") else keys[::-1]))
    one_line_error(run(workdir, "audit", "verify", "--pubkey", str(both)), "holds 2 PEM blocks")


DB_COMMANDS = [
    ("audit", "verify"),
    ("audit", "checkpoint"),
    ("audit", "prove", "1"),
    ("audit", "tail"),
    ("audit", "export", "--format", "jsonl", "--out", "{tmp}/out.jsonl"),
    ("audit", "export", "--format", "parquet", "--out", "{tmp}/out.parquet"),
    ("keys", "rotate", "--new-key", "{tmp}/next.key"),
]
BAD_DBS = {  # --db value -> what the one line must say
    "text file": ("text.duckdb", "not a DuckDB database file"),
    "directory": ("folder.duckdb", "is a directory, not a DuckDB database file"),
    "missing file": ("missing.duckdb", "no such audit database"),
    "DuckDB file without audit tables": ("plain.duckdb", "not a policyengine audit log"),
}


@pytest.fixture(scope="module")
def bad_dbs(workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bad")
    (folder / "text.duckdb").write_text("this is not a database\n" * 100)
    (folder / "folder.duckdb").mkdir()
    con = duckdb.connect(str(folder / "plain.duckdb"))
    con.execute("CREATE TABLE t (x INTEGER)").fetchall()
    con.close()
    assert run(folder, "keys", "generate", "--out", "next.key").returncode == 0
    return folder


@pytest.mark.parametrize("bad", sorted(BAD_DBS))
@pytest.mark.parametrize("command", DB_COMMANDS, ids=[" ".join(c[:2]) + ("" if "--format" not in c else " " + c[3])
                                                      for c in DB_COMMANDS])
def test_a_bad_db_gets_one_line_naming_it_once(workdir: Path, bad_dbs: Path, command: tuple[str, ...],
                                               bad: str) -> None:
    name, expected = BAD_DBS[bad]
    db = str(bad_dbs / name)
    args = [a.format(tmp=bad_dbs) for a in command]
    result = run(workdir, *args, "--db", db)
    one_line_error(result, f"error: {db}: {expected}" if expected != "not a policyengine audit log" else expected)
    assert result.stderr.count(name) == 1, result.stderr  # never `x.duckdb: x.duckdb: ...`
    assert not (bad_dbs / "missing.duckdb").exists()  # nothing, not even `keys rotate`, creates a log here
    assert {p.name for p in bad_dbs.iterdir()} <= {"text.duckdb", "folder.duckdb", "plain.duckdb", "next.key",
                                                   "next.key.pub.pem"}


def test_keys_rotate_does_not_start_a_log_in_a_foreign_duckdb_file(workdir: Path, bad_dbs: Path) -> None:
    one_line_error(run(workdir, "keys", "rotate", "--db", str(bad_dbs / "plain.duckdb"), "--new-key",
                       str(bad_dbs / "next.key")), "plain.duckdb: has no audit tables")
    con = duckdb.connect(str(bad_dbs / "plain.duckdb"), read_only=True)
    assert [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()] == ["t"]
    con.close()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from policyengine.audit import AuditLog, load_private_key
    with AuditLog(sys.argv[1], load_private_key(sys.argv[2])) as log:
        log.append("alert", payload={"kind": "drift"})
        log.flush()
        print("ready", flush=True)
        sys.stdin.readline()
    """
)


def test_a_database_held_by_a_writer_process_is_reported_in_use(workdir: Path, tmp_path: Path) -> None:
    db = tmp_path / "held.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(workdir / "policyengine.key")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        (tmp_path / "next.key").write_bytes((workdir / "policyengine.key").read_bytes())
        (tmp_path / "next.key").chmod(0o600)  # a private key others can read is used with a warning
        for command in DB_COMMANDS:
            result = run(workdir, *[a.format(tmp=tmp_path) for a in command], "--db", str(db))
            one_line_error(result, f"error: {db}: audit database is in use by another process (pid {holder.pid}); ")
            assert ").)" not in result.stderr and result.stderr.count("held.duckdb") == 1, result.stderr
        held = subprocess.run(
            [sys.executable, "-c", ("import sys; from policyengine.audit import *; "
                                    "AuditLog(sys.argv[1], load_private_key(sys.argv[2]))"),
             str(db), str(workdir / "policyengine.key")],
            capture_output=True, text=True, timeout=60, check=False)
        assert f"{db}: audit database is in use by another process (pid {holder.pid}); " in held.stderr
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)
    assert run(workdir, "audit", "verify", "--db", str(db)).returncode == 0


OUT_COMMANDS = [  # every audit command that writes an --out FILE
    ("audit", "export", "--format", "jsonl"),
    ("audit", "export", "--format", "parquet"),
    ("audit", "checkpoint"),
    ("audit", "prove", "1"),
]


@pytest.mark.parametrize("target", ["the audit database", "the signing key"])
@pytest.mark.parametrize("command", OUT_COMMANDS, ids=[" ".join(c[1:]) for c in OUT_COMMANDS])
def test_out_never_writes_over_the_log_or_a_private_key(workdir: Path, tmp_path: Path, command: tuple[str, ...],
                                                        target: str) -> None:
    """`--out audit.duckdb` (a slip: the --db given twice) truncated the log it was exporting, and `--out
    policyengine.key` replaced the key that signs it: either was lost for good."""
    db, key = tmp_path / "audit.duckdb", tmp_path / "policyengine.key"
    db.write_bytes((workdir / "policyengine.duckdb").read_bytes())
    key.write_bytes((workdir / "policyengine.key").read_bytes())
    (tmp_path / "policyengine.key.pub.pem").write_bytes((workdir / "policyengine.key.pub.pem").read_bytes())
    out = db if target == "the audit database" else key
    before = out.read_bytes()
    one_line_error(run(tmp_path, *command, "--db", str(db), "--out", str(out)), str(out), "refusing to write over it")
    assert out.read_bytes() == before
    verified = run(tmp_path, "audit", "verify", "--db", str(db))
    assert verified.returncode == 0 and "OK, 120 records" in verified.stdout, verified.stderr
    assert run(tmp_path, *command, "--db", str(db), "--out", str(tmp_path / "fresh.out")).returncode == 0
