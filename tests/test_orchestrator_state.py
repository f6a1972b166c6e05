"""Durable pieces under the runner: run state, the buffered ledger, the user directory, input files."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from policyengine.budgets import DuckDBLedger, InMemoryLedger, scope_key
from policyengine.orchestrator.approvals import Directory
from policyengine.orchestrator.ledger import BufferedLedger
from policyengine.orchestrator.state import ApprovalRecord, EffectRecord, RunRecord, StateStore, StepRecord
from policyengine.orchestrator.workflows import WORKFLOWS, load_items, sample_path

T0 = datetime(2026, 11, 24, 9, 0)


def run(run_id: str, status: str = "running") -> RunRecord:
    return RunRecord(run_id, None, "wf", "item", "carol", status, None, '{"id": "item"}', None, None, 0, 0.0, T0, T0)


def step(run_id: str, name: str, status: str, output: dict | None = None) -> StepRecord:
    return StepRecord(run_id, name, 0, "tool", status, f"{run_id}/{name}", json.dumps(output) if output else None,
                      "allow", None, None, None, None, 1.0, T0, T0)


def test_state_survives_closing_the_connection_and_rows_are_replaced_by_key(tmp_path):
    db = tmp_path / "s.duckdb"
    conn = duckdb.connect(str(db))
    store = StateStore(conn)
    store.put(run("r-aaa111"), step("r-aaa111", "pay", "started"))
    assert [s.status for s in store.steps("r-aaa111")] == ["started"]  # buffered rows are visible
    store.flush()
    store.put(step("r-aaa111", "pay", "done", {"ref": 1}), replace(run("r-aaa111"), status="completed"))
    store.close()
    conn.close()

    store = StateStore(duckdb.connect(str(db)))
    (s,) = store.steps("r-aaa111")
    assert (s.status, s.output_dict()) == ("done", {"ref": 1})
    assert store.run("r-aaa").status == "completed"  # a unique prefix is enough
    assert store.run("r-zzz") is None
    assert store.counts() == {"completed": 1}


def approval(run_id: str, status: str = "pending", approver: str | None = None) -> ApprovalRecord:
    return ApprovalRecord(run_id, "pay", "big_payment", "controller", "carol", T0, T0 + timedelta(hours=4), "deny",
                          True, status, approver, None, T0 if approver else None)


@pytest.mark.parametrize(("first", "later", "table", "check"), [
    (run("r-1"), replace(run("r-1"), status="completed", tokens=7), "orch_runs", "SELECT status, tokens FROM orch_runs"),
    (step("r-1", "pay", "started"), step("r-1", "pay", "done", {"ref": 2}), "orch_steps",
     "SELECT status, output FROM orch_steps"),
    (approval("r-1"), approval("r-1", "approved", "dana"), "orch_approvals", "SELECT status, approver FROM orch_approvals"),
], ids=["run", "step", "approval"])
def test_a_row_written_again_alone_is_changed_in_place_not_added(tmp_path, first, later, table, check):
    """Small flushes update a row by its key and insert only a new one (cheaper than INSERT OR REPLACE): the
    table keeps one row per key, with the later values."""
    conn = duckdb.connect(str(tmp_path / "s.duckdb"))
    store = StateStore(conn)
    store.put(first)
    store.flush()
    store.put(later)
    store.flush()
    expected = {"orch_runs": ("completed", 7), "orch_steps": ("done", '{"ref": 2}'),
                "orch_approvals": ("approved", "dana")}[table]
    assert conn.execute(check).fetchall() == [expected]


def test_an_ambiguous_prefix_is_refused(tmp_path):
    store = StateStore(duckdb.connect(str(tmp_path / "s.duckdb")))
    store.put(run("r-ab1"), run("r-ab2"))
    with pytest.raises(LookupError, match="matches more than one run"):
        store.run("r-ab")
    assert store.run("r-ab1").run_id == "r-ab1"  # an exact id wins even if it prefixes nothing else


def test_large_flushes_go_through_arrow_and_round_trip(tmp_path):
    store = StateStore(duckdb.connect(str(tmp_path / "s.duckdb")))
    store.put(*[run(f"r-{i:04d}") for i in range(500)], *[step(f"r-{i:04d}", "a", "done", {"i": i})
                                                           for i in range(500)])
    assert store.flush() == 1000
    assert len(store.runs(limit=1000)) == 500
    assert store.steps("r-0420")[0].output_dict() == {"i": 420}


def test_overdue_approvals_and_effect_receipts(tmp_path):
    store = StateStore(duckdb.connect(str(tmp_path / "s.duckdb")))
    pending = ApprovalRecord("r-1", "pay", "g", "senior_analyst", "carol", T0, T0 + timedelta(hours=4), "deny",
                             True, "pending", None, None, None)
    store.put(run("r-1", "waiting_approval"), pending, replace(pending, run_id="r-2", deadline_at=None))
    assert store.overdue(T0 + timedelta(hours=3)) == []
    assert [a.run_id for a in store.overdue(T0 + timedelta(hours=4))] == ["r-1"]
    assert store.overdue(datetime(2026, 11, 24, 13, 0, tzinfo=UTC))  # aware times are compared in UTC
    assert store.effect("r-1/pay") is None
    store.put(EffectRecord("r-1/pay", "r-1", "pay", "erp/payments", '{"ref": "x"}', T0))
    assert store.effect("r-1/pay") == {"ref": "x"}
    store.flush()
    store.put(EffectRecord("r-1/pay", "r-1", "pay", "erp/payments", '{"ref": "second"}', T0))
    store.flush()
    assert store.effect("r-1/pay") == {"ref": "x"}  # the first receipt of a key is kept


@pytest.fixture(params=["embedded", pytest.param("postgres", marks=pytest.mark.postgres)])
def run_state(request, tmp_path):
    """A writable run state of each kind: the embedded DuckDB one and PostgreSQL's."""
    if request.param == "embedded":
        conn = duckdb.connect(str(tmp_path / "s.duckdb"))
        yield StateStore(conn)
        conn.close()
        return
    from policyengine.store import open_store
    from policyengine.store.stores import open_run_state

    with open_store(request.getfixturevalue("postgres_url")) as shared:
        state = open_run_state(shared)
        yield state
        state.close()


def _gate(run_id: str, name: str, minutes: int, status: str = "pending") -> ApprovalRecord:
    return ApprovalRecord(run_id, name, "g", "senior_analyst", "carol", T0 + timedelta(minutes=minutes), None, "deny",
                          True, status, None, None, None)


@pytest.mark.parametrize("run_ids", [
    [], ["r-1"], ["r-2", "r-1"], ["r-1", "r-1", "r-3"], ["r-none"], ["r-1", "r-2", "r-3", "r-none"],
])
def test_the_reads_of_several_runs_agree_with_the_reads_of_each(run_state, run_ids):
    """``steps_of_runs`` / ``approvals_of_runs`` (one query for the approver inbox) = ``steps`` / ``approvals`` per run."""
    run_state.put(*(run(r, "waiting_approval") for r in ("r-1", "r-2", "r-3")),
                  replace(step("r-1", "b", "done"), ord=1), step("r-1", "a", "done"), step("r-2", "a", "started"),
                  _gate("r-1", "b", 5), _gate("r-1", "a", 1, "approved"), _gate("r-2", "a", 3))
    run_state.flush()
    # buffered rows: one replaces a flushed row, one is new (reads see them over the database's)
    run_state.put(step("r-2", "a", "done"), _gate("r-3", "c", 2), replace(step("r-3", "x", "done"), ord=2))
    steps = run_state.steps_of_runs(run_ids)
    approvals = run_state.approvals_of_runs(run_ids)
    assert steps == {r: run_state.steps(r) for r in sorted(set(run_ids)) if run_state.steps(r)}
    assert approvals == {r: run_state.approvals(r) for r in sorted(set(run_ids)) if run_state.approvals(r)}
    assert [s.step for s in steps.get("r-1", [])] == (["a", "b"] if "r-1" in run_ids else [])
    assert [(g.step, g.status) for g in approvals.get("r-1", [])] == (
        [("a", "approved"), ("b", "pending")] if "r-1" in run_ids else [])
    assert [s.status for s in steps.get("r-2", [])] == (["done"] if "r-2" in run_ids else [])
    assert "r-none" not in steps and "r-none" not in approvals


def test_runs_are_looked_up_by_exact_id_in_one_read_over_buffered_and_intent_only_runs(run_state):
    """``runs_by_id``: how a re-run of a batch finds its items' runs (orchestrator/batch.py), on both stores."""
    run_state.put(run("r-1", "completed"), run("r-10", "completed"), run("r-2"))
    run_state.flush()
    run_state.put(run("r-2", "waiting_approval"), run("r-3"))  # buffered: one replaces a durable row, one is new
    run_state.write_intent(run("r-4"), "pay", "r-4/pay")  # a run first made durable by its intent
    found = run_state.runs_by_id(["r-1", "r-2", "r-3", "r-4", "r-none", "r-1"])
    assert {k: r.status for k, r in found.items()} == {"r-1": "completed", "r-2": "waiting_approval",
                                                       "r-3": "running", "r-4": "running"}
    assert all(k == r.run_id for k, r in found.items()) and found["r-4"].item() == {"id": "item"}
    assert list(run_state.runs_by_id(["r-1"])) == ["r-1"]  # exact: r-1 is a prefix of r-10, not a match
    assert run_state.runs_by_id(["r-"]) == {} and run_state.runs_by_id([]) == {}


def test_buffered_ledger_reads_durable_usage_plus_pending_charges(tmp_path):
    conn = duckdb.connect(str(tmp_path / "l.duckdb"))
    durable = DuckDBLedger(conn)
    key = scope_key("workflow", "w")
    noon = datetime(2026, 11, 24, 12, 30, tzinfo=UTC)
    day = noon.replace(hour=0, minute=0)
    durable.charge(key, "tokens", 100, noon - timedelta(hours=2))
    durable.charge(key, "tokens", 999, noon - timedelta(days=1))  # yesterday: not in today's window
    ledger = BufferedLedger(durable)
    assert ledger.usage(key, "tokens", day) == 100
    ledger.charge(key, "tokens", 40, noon)
    ledger.charge(key, "USD", 0.5, noon)
    assert ledger.usage(key, "tokens", day) == 140 and ledger.usage(key, "USD", day) == 0.5
    assert durable.usage(key, "tokens", day) == 100  # nothing written yet
    ledger.flush()
    assert durable.usage(key, "tokens", day) == 140
    assert ledger.usage(key, "tokens", day) == 140  # not double counted after the flush
    ledger.charge(key, "tokens", 10, noon)
    assert ledger.usage(key, "tokens", day) == 150


def test_buffered_ledger_agrees_with_an_in_memory_ledger():
    ref, ledger = InMemoryLedger(), BufferedLedger(InMemoryLedger())
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(50):
        at = start + timedelta(hours=7 * i)
        for led in (ref, ledger):
            led.charge("model:m", "tokens", i, at)
        if i % 7 == 0:
            ledger.flush()
        for window_start in (start, start + timedelta(days=5), at):
            assert ledger.usage("model:m", "tokens", window_start) == ref.usage("model:m", "tokens", window_start)


@pytest.mark.parametrize("text, message", [
    ("users: [alice]", "needs a top-level 'users' mapping"),
    ("users:\n  alice: {roles: analyst}", "user 'alice': 'roles' must be a list"),
    ("users: {alice: {roles: [1]}}", "user 'alice': 'roles' must be a list"),
    ("users:\n  alice: [unclosed", "users.yaml:2: user directory is not valid YAML"),
])
def test_bad_directory_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "users.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        Directory.load(path)


def test_the_shipped_directory_has_an_approver_for_every_gate_role_of_the_workflows():
    users = Directory.load(sample_path("fraud-routing").parent / "directory.yaml")
    held = {r for u in users.users.values() for r in u.roles}
    assert {"senior_analyst", "supply_manager", "fraud_analyst", "fraud_lead", "it_service_manager"} <= held
    assert users.users["operator"].roles == ()


@pytest.mark.parametrize("name, text, expected", [
    ("one.json", '{"id": "a"}', [{"id": "a"}]),
    ("many.json", '[{"id": "a"}, {"id": "b"}]', [{"id": "a"}, {"id": "b"}]),
    ("lines.jsonl", '{"id": "a"}\n\n{"id": "b"}\n', [{"id": "a"}, {"id": "b"}]),
    ("table.csv", "id,amount,rate,flag,note,zip,odd\na,10,-0.5,true,,007,nan\n",
     [{"id": "a", "amount": 10, "rate": -0.5, "flag": True, "note": None, "zip": "007", "odd": "nan"}]),
])
def test_input_formats(tmp_path, name, text, expected):
    (tmp_path / name).write_text(text)
    assert load_items(tmp_path / name) == expected


@pytest.mark.parametrize("name, text, message", [
    ("bad.json", "[{", "bad.json:1: not valid JSON"),
    ("bad.json", "[1, 2]", "bad.json: input must be a JSON object or an array of objects"),
    ("bad.jsonl", '{"id": 1}\n[2]\n', "bad.jsonl:2: each line must be a JSON object"),
    ("bad.jsonl", '{"id": 1}\n{oops\n', "bad.jsonl:2: not valid JSON"),
    ("nan.jsonl", '{"amount": NaN}\n', "nan.jsonl:1: amount: NaN is not a JSON number"),
    ("inf.json", '[{"amount": -Infinity}]', "inf.json:1: amount: -Infinity is not a JSON number"),
    ("inf.json", '[\n{"id": 1},\n{"id": 2, "x": {"y": [Infinity]}}]', "inf.json:3: x.y\\[0\\]: Infinity is not a JSON number"),
])
def test_bad_input_files_name_file_and_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        load_items(tmp_path / name)


@pytest.mark.parametrize("workflow", sorted(WORKFLOWS))
def test_every_workflow_ships_a_few_hundred_sample_items_with_unique_ids(workflow):
    items = load_items(sample_path(workflow))
    assert 200 <= len(items) <= 400
    ids = [WORKFLOWS[workflow].item_id(i) for i in items]
    assert len(set(ids)) == len(ids) and all(ids)


@pytest.mark.parametrize("text, message", [
    ("models:\n  m: {accuracy: high}\n", "models.m.accuracy: 'high' is not a number >= 0"),
    ("models:\n  m: {fail: sometimes}\n", "models.m.fail: 'sometimes' is not error or timeout"),
    ("models:\n  m: {speed: 3}\n", "models.m: unknown settings ['speed']"),
    ("providers:\n  openai-compatible: {}\n", "providers.openai-compatible: needs a base_url"),
    ("retries: many\n", "retries must be an integer"),
    ("- just a list\n", "provider configuration must be a mapping"),
    # a misspelt setting was dropped: `provider:` left every model on the simulator; an API key went in clear
    ("provider:\n  openai-compatible: {base_url: 'https://llm.example/v1'}\n", "unknown setting 'provider'"),
    ("retry: 3\n", "unknown setting 'retry'"),
    ("providers:\n  openai-compatible: {base_url: 'https://llm.example/v1', api_key: sk-x}\n",
     "providers.openai-compatible: unknown setting 'api_key'"),
    ("providers:\n  openai-compatible: {base_url: 'http://llm.example.com/v1'}\n",
     "providers.openai-compatible.base_url: plain http to a host that is not loopback would carry the API key"),
    ("providers:\n  openai-compatible: {base_url: 'llm.example.com/v1'}\n",
     "providers.openai-compatible.base_url: must be an http(s) URL"),
])
def test_bad_provider_configuration_is_one_clear_line(tmp_path, text, message):
    from policyengine.engine import load_policy
    from policyengine.orchestrator.session import SessionError, default_rules, load_providers

    path = tmp_path / "providers.yaml"
    path.write_text(text)
    with pytest.raises(SessionError, match=re.escape(message)):
        load_providers(path, load_policy(default_rules()))


@pytest.mark.parametrize("with_runs", [True, False])
def test_a_read_only_store_reads_without_creating_or_writing(tmp_path, with_runs):
    db = tmp_path / "ro.duckdb"
    with duckdb.connect(str(db)) as conn:
        if with_runs:
            store = StateStore(conn)
            store.put(run("r-ro0001", "waiting_approval"), step("r-ro0001", "pay", "waiting"))
            store.close()
        else:
            conn.execute("CREATE TABLE unrelated (x INTEGER)")
    with duckdb.connect(str(db), read_only=True) as conn:
        store = StateStore(conn, read_only=True)
        assert [r.run_id for r in store.runs()] == (["r-ro0001"] if with_runs else [])
        assert [s.status for s in store.steps("r-ro0001")] == (["waiting"] if with_runs else [])
        assert store.approvals("r-ro0001") == [] and store.overdue(T0) == [] and store.effect("r-ro0001/pay") is None
        assert store.counts() == ({"waiting_approval": 1} if with_runs else {})
        assert list(store.runs_by_id(["r-ro0001"])) == (["r-ro0001"] if with_runs else [])
        with pytest.raises(RuntimeError, match="read-only"):
            store.put(run("r-ro0002"))
    with duckdb.connect(str(db), read_only=True) as conn:
        tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert ("orch_runs" in tables) is with_runs  # nothing was created


@pytest.mark.parametrize("name,text,line", [
    ("deep.json", '[{"id": "a"},\n{"id": "b", "x": ' + "[" * 100_000 + "]" * 100_000 + "}]", 1),
    ("deep.jsonl", '{"id": "a"}\n{"id": "b", "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n", 2),
])
def test_input_nested_past_the_parser_is_named_not_a_traceback(tmp_path, name, text, line):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError) as err:
        load_items(tmp_path / name)
    assert str(err.value) == f"{tmp_path / name}:{line}: nested too deeply to read"


def test_a_five_thousand_digit_integer_is_named_not_a_traceback(tmp_path):
    digits = "9" * 5000
    (tmp_path / "big.jsonl").write_text('{"id": "a", "n": ' + digits + "}\n")
    (tmp_path / "big.csv").write_text("id,n\na," + digits + "\n")
    for name, line in (("big.jsonl", 1), ("big.csv", 2)):
        with pytest.raises(ValueError) as err:
            load_items(tmp_path / name)
        assert str(err.value).splitlines()[0] == (
            f"{tmp_path / name}:{line}: n: number {'9' * 20}...{'9' * 10} (5000 digits) is out of range (numbers must be finite IEEE-754 doubles)")
