"""The writer: seqs, batches, checkpoints, reopening, shared connections, keys, masking."""

from __future__ import annotations

import json
import os
import stat
from itertools import pairwise
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policyengine.audit import (
    AuditError,
    AuditLog,
    Masking,
    generate_key,
    load_masking,
    load_private_key,
    load_public_key,
    record_decisions,
    verify_database,
)
from policyengine.audit.masking import parse_pointer


@pytest.fixture
def key(tmp_path: Path):
    return generate_key(tmp_path / "signing.key")


def rows(path: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def test_generated_key_files_mode_id_and_round_trip(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k")
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600
    assert load_private_key(tmp_path / "k").key_id == key.key_id
    assert load_public_key(tmp_path / "k.pub.pem").key_id == key.key_id
    assert len(key.key_id) == 32
    with pytest.raises(AuditError, match="already exists"):
        generate_key(tmp_path / "k")


@pytest.mark.parametrize("content", [b"", b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"])
def test_bad_key_files_give_one_line_errors(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "bad.key").write_bytes(content)
    with pytest.raises(AuditError, match="bad.key") as err:
        load_private_key(tmp_path / "bad.key")
    assert "\n" not in str(err.value)


def test_seqs_are_gap_free_and_flush_makes_them_durable(tmp_path: Path, key) -> None:
    db = tmp_path / "a.duckdb"
    with AuditLog(db, key, batch_size=7, checkpoint_every=20, flush_interval=0) as log:
        seqs = [log.append("tool_call", payload={"tool": "t", "i": i}) for i in range(50)]
        assert seqs == list(range(1, 51))
        assert log.flush() == 50
    assert rows(db, "SELECT count(*), min(seq), max(seq) FROM audit_log") == [(50, 1, 50)]
    # checkpoints are signed at flush boundaries once 20 records are pending, and on close
    sizes = [r[0] for r in rows(db, "SELECT tree_size FROM audit_checkpoints ORDER BY tree_size")]
    assert sizes[-1] == 50 and all(b > a for a, b in pairwise(sizes))
    assert verify_database(db, [key.public]).ok


def test_reopening_continues_the_same_log(tmp_path: Path, key) -> None:
    db = tmp_path / "a.duckdb"
    with AuditLog(db, key, origin="billing", flush_interval=0) as log:
        log.append("alert", payload={"kind": "budget"})
    with AuditLog(db, key, flush_interval=0) as log:
        assert log.origin == "billing"
        assert log.append("alert", payload={"kind": "drift"}) == 2
    report = verify_database(db, [key.public])
    assert report.ok and report.records == 2 and report.checkpoints == 2
    with pytest.raises(AuditError, match="holds the log 'billing'"):
        AuditLog(db, key, origin="other")


def test_a_second_writer_in_the_same_process_is_refused(tmp_path: Path, key) -> None:
    db = tmp_path / "a.duckdb"
    with AuditLog(db, key, flush_interval=0), pytest.raises(AuditError, match="already open for writing"):
        AuditLog(db, key, flush_interval=0)
    AuditLog(db, key, flush_interval=0).close()  # released on close


def test_writes_through_a_shared_connection_without_touching_its_transaction(tmp_path: Path, key) -> None:
    db = tmp_path / "shared.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE runs (id INTEGER)")
    con.execute("BEGIN TRANSACTION")
    con.execute("INSERT INTO runs VALUES (1)")
    with AuditLog(con, key, flush_interval=0) as log:
        log.append("model_call", payload={"model": "m", "tokens": 3})
        log.flush()
    con.execute("ROLLBACK")  # the caller's transaction is theirs alone
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM audit_log").fetchone() == (1,)
    con.close()
    assert verify_database(db, [key.public]).ok


def test_bad_appends_are_refused_with_clear_messages(tmp_path: Path, key) -> None:
    with AuditLog(tmp_path / "a.duckdb", key, flush_interval=0) as log:
        with pytest.raises(AuditError, match="unknown audit event 'oops'"):
            log.append("oops", payload={})
        with pytest.raises(AuditError, match="must be a JSON object"):
            log.append("alert", payload=[1, 2])  # type: ignore[arg-type]
        with pytest.raises(AuditError, match=r"NaN|nan"):
            log.append("alert", payload={"value": float("nan")})
        assert log.append("alert", payload={"ok": True}) == 1  # nothing was consumed by the failures


def test_opening_with_another_key_is_refused_but_rotation_chains(tmp_path: Path, key) -> None:
    db = tmp_path / "a.duckdb"
    new = generate_key(tmp_path / "new.key")
    with AuditLog(db, key, flush_interval=0) as log:
        log.append("alert", payload={"n": 1})
    with pytest.raises(AuditError, match="signed by key"):
        AuditLog(db, new, flush_interval=0)
    with AuditLog(db, key, flush_interval=0) as log:
        rotated_at = log.rotate_key(new)
    with pytest.raises(AuditError, match="signed by key"):
        AuditLog(db, key, flush_interval=0)  # the old key is retired
    with AuditLog(db, new, flush_interval=0) as log:
        log.append("alert", payload={"n": 2})
    assert rotated_at == 2
    event, payload, key_id = rows(db, "SELECT event, payload::VARCHAR, key_id FROM audit_log WHERE seq = 2")[0]
    assert event == "key_rotated" and key_id == key.key_id
    assert json.loads(payload)["new_key_id"] == new.key_id
    assert rows(db, "SELECT key_id FROM audit_log WHERE seq = 3") == [(new.key_id,)]
    assert verify_database(db, [key.public]).ok  # the old key vouches for the new one
    only_new = verify_database(db, [new.public]).failure
    assert only_new is not None and only_new.kind == "unknown_key" and only_new.seq == 1
    assert rows(db, "SELECT count(*) FROM audit_checkpoints WHERE key_id = ?", [new.key_id]) == [(1,)]


def test_masking_drops_and_hashes_and_records_what_it_did(tmp_path: Path, key) -> None:
    config = tmp_path / "masking.yaml"
    config.write_text("drop:\n  - /request/principal/attrs/email\n  - /request/people/*/ssn\n"
                      "hash:\n  - /request/data/customer_id\n  - /absent\n", encoding="utf-8")
    masking = load_masking(config)
    payload = {"request": {"principal": {"id": "u", "attrs": {"email": "a@b.c", "dept": "ap"}},
                           "data": {"customer_id": "C-42"}, "people": [{"ssn": "1"}, {"ssn": "2", "n": 1}]}}
    db = tmp_path / "a.duckdb"
    with AuditLog(db, key, masking=masking, flush_interval=0) as log:
        log.append("decision", payload=payload)
    stored = json.loads(rows(db, "SELECT payload::VARCHAR FROM audit_log")[0][0])
    assert "email" not in stored["request"]["principal"]["attrs"]
    assert stored["request"]["people"] == [{}, {"n": 1}]
    assert stored["request"]["data"]["customer_id"].startswith("sha256:")
    # the configured pointers that matched, as written: a * never lists what it matched
    assert stored["_masked"] == {"drop": ["/request/people/*/ssn", "/request/principal/attrs/email"],
                                 "hash": ["/request/data/customer_id"]}
    assert payload["request"]["principal"]["attrs"]["email"] == "a@b.c"  # the caller's dict is untouched
    assert "C-42" not in db.read_bytes().decode("latin-1")


def test_salted_hash_needs_its_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "m.yaml"
    config.write_text("hash: [/x]\nsalt_env: PE_TEST_SALT\n", encoding="utf-8")
    monkeypatch.delenv("PE_TEST_SALT", raising=False)
    with pytest.raises(AuditError, match="PE_TEST_SALT"):
        load_masking(config)
    monkeypatch.setenv("PE_TEST_SALT", "pepper")
    assert load_masking(config).apply({"x": 1})["x"].startswith("hmac-sha256:")


@pytest.mark.parametrize(("text", "message"), [("drop: /x\n", "list of JSON pointers"), ("drop: [x]\n", "must start with '/'"),
                                               ("mask: []\n", "expected a mapping"), ("drop: [\n", "not valid YAML"),
                                               # cut short: masking nothing would be a leak, so it must be said
                                               ("", "the masking config is empty"),
                                               ("# masks\n", "the masking config is empty"),
                                               ("drop:\n", "drop lists no JSON pointer"),
                                               ("drop: [/a]\nhash:\n", "hash lists no JSON pointer")])
def test_bad_masking_configs_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "m.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(AuditError, match=message):
        load_masking(tmp_path / "m.yaml")


def test_an_explicit_empty_list_masks_nothing_on_purpose(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("drop: []\n", encoding="utf-8")
    assert load_masking(tmp_path / "m.yaml").apply({"x": 1}) == {"x": 1}


def test_pointer_escapes() -> None:
    assert parse_pointer("/a~1b/c~0d/0") == ("a/b", "c~d", "0")
    assert Masking(drop=(("a/b",),)).apply({"a/b": 1, "c": 2}) == {"c": 2, "_masked": {"drop": ["/a~1b"], "hash": []}}


def test_record_decisions_writes_the_documented_decision_shape(tmp_path: Path, key) -> None:
    db = tmp_path / "a.duckdb"
    request = {"principal": {"id": "alice", "type": "user"}, "action": "read",
               "resource": {"kind": "dataset", "id": "erp/x"}, "context": {"workflow": "invoice-exceptions"}}
    decision = {"effect": "allow", "reasons": [], "obligations": [], "route": None, "policy_hash": "abc"}
    with record_decisions(db, tmp_path / "signing.key") as record:
        assert record(request, decision) == 1
    actor, workflow, policy_hash, payload = rows(db, "SELECT actor, workflow, policy_hash, payload::VARCHAR FROM audit_log")[0]
    assert (actor, workflow, policy_hash) == ("alice", "invoice-exceptions", "abc")
    assert json.loads(payload) == {"request": request, "decision": decision}


def test_awkward_text_verifies(tmp_path: Path, key) -> None:
    """Control characters, separators and escapes in every column verify (one canonicaliser for writer and verifier)."""
    db = tmp_path / "a.duckdb"
    awkward = ["\x0b\x1f\x7f", "é\u2028\U0001f600", "back\\slash \"q\"", "\\u000B literal", ""]
    with AuditLog(db, key, flush_interval=0) as log:
        for text in awkward:
            log.append("tool_call", actor=text, workflow=text, payload={text: text, "n": 1e-7})
    assert verify_database(db, [key.public]).ok


def test_documented_leaf_example_is_exact() -> None:
    """docs/audit.md shows a record's canonical bytes and leaf hash; other verifiers copy them."""
    from policyengine.audit.log import leaf_bytes
    from policyengine.audit.merkle import leaf_hash

    doc = (Path(__file__).resolve().parents[1] / "docs" / "audit.md").read_text(encoding="utf-8")
    data = leaf_bytes(seq=1, ts="2026-11-24T12:00:00.000000Z", origin="policyengine", event="tool_call",
                      actor="agent:invoice_classifier", workflow="invoice-exceptions", run_id="run-1",
                      payload='{"latency_ms":12.5,"status":"ok","step":"fetch","tool":"erp.lookup"}',
                      policy_hash=None, key_id="c9528d1816e0be2f08e5d303ba40875a")
    assert "    " + data.decode() + "\n" in doc
    assert f"leaf_hash = {leaf_hash(data).hex()}" in doc


def test_threads_share_one_log_without_losing_or_repeating_seqs(tmp_path: Path, key) -> None:
    import threading

    db = tmp_path / "a.duckdb"
    seen: list[int] = []
    with AuditLog(db, key, batch_size=50, checkpoint_every=100, flush_interval=0.01) as log:

        def work(n: int) -> None:
            for i in range(300):
                seen.append(log.append("tool_call", actor=f"t{n}", payload={"i": i}))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(seen) == list(range(1, 1201))
    report = verify_database(db, [key.public])
    assert report.ok and report.records == 1200


def test_the_timer_makes_records_durable_without_an_explicit_flush(tmp_path: Path, key) -> None:
    import time

    con = duckdb.connect(str(tmp_path / "a.duckdb"))
    with AuditLog(con, key, flush_interval=0.02, checkpoint_interval=0.05) as log:
        log.append("alert", payload={"kind": "drift"})
        for _ in range(500):  # poll: the writer thread commits within a few intervals
            if con.execute("SELECT count(*) FROM audit_checkpoints").fetchone() == (1,):
                break
            time.sleep(0.01)
        assert con.execute("SELECT count(*) FROM audit_log").fetchone() == (1,)
        assert con.execute("SELECT tree_size FROM audit_checkpoints").fetchall() == [(1,)]
    con.close()


def test_a_snapshot_of_a_live_log_verifies_while_the_writer_runs(tmp_path: Path, key) -> None:
    with AuditLog(tmp_path / "live.duckdb", key, flush_interval=0) as log:
        for i in range(30):
            log.append("tool_call", payload={"i": i})
        snap = log.snapshot(tmp_path / "snap.duckdb")
        log.append("tool_call", payload={"i": 30})  # the writer carries on
        with pytest.raises(AuditError, match="already exists"):
            log.snapshot(snap)
    report = verify_database(snap, [key.public])
    assert report.ok and report.records == 30


any_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=10)
any_payload = st.dictionaries(any_text, st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False)
                              | st.integers(-(2**53), 2**53) | any_text | st.lists(any_text, max_size=2), max_size=4)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.none() | any_text, st.none() | any_text, any_payload), min_size=1, max_size=6))
def test_whatever_is_written_verifies(tmp_path_factory: pytest.TempPathFactory, records: list) -> None:
    """DuckDB's vectorised leaf check plus the exact re-check never reports an intact record."""
    folder = tmp_path_factory.mktemp("any")
    key = generate_key(folder / "k")
    with AuditLog(folder / "a.duckdb", key, flush_interval=0) as log:
        for actor, workflow, payload in records:
            log.append("data_access", actor=actor, workflow=workflow, run_id=actor, payload=payload, policy_hash=workflow)
    report = verify_database(folder / "a.duckdb", [key.public])
    assert report.ok, report.summary()


def checkpoint_sizes(con: duckdb.DuckDBPyConnection) -> list[int]:
    return [r[0] for r in con.execute("SELECT tree_size FROM audit_checkpoints ORDER BY tree_size").fetchall()]


# (records appended before the step, how the step commits, checkpoint sizes in the table after it)
CHECKPOINT_STEPS = [
    (5, "flush", [5]),
    (1, "flush", [5, 6]),  # provisional checkpoints stay until the next kept one...
    (1, "flush", [5, 6, 7]),
    (0, "checkpoint", [7]),  # ...which deletes them: here the newest provisional one becomes kept
    (1, "flush kept", [7, 8]),
    (1, "flush", [7, 8, 9]),
    (1, "flush kept", [7, 8, 10]),  # a kept batch with records deletes the provisional ones before it
    (1, "flush", [7, 8, 10, 11]),
]


def test_every_committed_batch_is_signed_in_its_own_transaction(tmp_path: Path, key) -> None:
    """No flushed record is ever uncovered; provisional checkpoints go when a kept one is committed."""
    from policyengine.audit.verify import verify_connection

    con = duckdb.connect(str(tmp_path / "a.duckdb"))
    seq = 0
    with AuditLog(con, key, flush_interval=0, checkpoint_every=10**9, checkpoint_interval=1e9) as log:
        for records, how, sizes in CHECKPOINT_STEPS:
            for _ in range(records):
                seq = log.append("tool_call", payload={"i": seq})
            if how == "checkpoint":
                log.checkpoint()
            else:
                log.flush(checkpoint=how == "flush kept")
            assert checkpoint_sizes(con) == sizes, (records, how)
            live = verify_connection(con, "live", [key.public])
            assert live.ok and live.unsigned == 0, live.summary()
    assert checkpoint_sizes(con) == [7, 8, 10, 11] and verify_connection(con, "closed", [key.public]).ok
    con.close()


def test_a_rotation_cut_as_a_full_batch_keeps_the_old_keys_checkpoint(tmp_path: Path, key) -> None:
    """The rotation record's checkpoint (old key) must survive the next batch, or the chain breaks."""
    db = tmp_path / "a.duckdb"
    new = generate_key(tmp_path / "next.key")
    with AuditLog(db, key, batch_size=1, flush_interval=0, checkpoint_every=10**9, checkpoint_interval=1e9) as log:
        for i in range(3):
            log.append("tool_call", payload={"i": i})
        assert log.rotate_key(new) == 4
        log.append("tool_call", payload={"i": 4})
        log.flush()
    assert [r[0] for r in rows(db, "SELECT tree_size FROM audit_checkpoints ORDER BY tree_size")] == [4, 5]
    report = verify_database(db, [key.public])
    assert report.ok, report.summary()


def test_every_new_log_gets_its_own_origin(tmp_path: Path, key) -> None:
    """Witnesses tell logs apart by origin: two logs never share the default one."""
    origins = set()
    for name in ("a", "b"):
        with AuditLog(tmp_path / f"{name}.duckdb", key, flush_interval=0) as log:
            assert log.origin.startswith("policyengine/") and " " not in log.origin and "+" not in log.origin
            origins.add(log.origin)
        with AuditLog(tmp_path / f"{name}.duckdb", key, flush_interval=0) as log:  # reopened: the same origin
            assert log.origin in origins
    assert len(origins) == 2
