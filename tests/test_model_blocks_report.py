"""`report model_blocks` prints the signed record of each block and lift, and says where the block list differs.

The block list (`model_blocks`) is what the engine denies, but it is not signed:
whoever can write the database can add or lift a block there alone. The report
reads the monitor's signed `alert` records and the `model_unblocked` records
instead, and names in a note every model whose block list tells another story.
A real signed log (Ed25519 key, the audit writer), the real monitor and unblock,
then the table changed behind their backs as such a writer would.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

import duckdb
import pytest

from policyengine.engine import load_policy
from policyengine.reporting.monitor import run_monitor, unblock
from policyengine.reporting.reports import ReportResult, run_named_report
from policyengine.store.blocklist import add_block, lift_blocks

sys.path.insert(0, str(Path(__file__).parent))
from test_cli_reporting import pe_inprocess
from test_monitor import NOW, POLICY, story, write_signed_db

BLOCKED, RULE = "classifier_small", "risk.classifier_confidence"  # the drift rule of POLICY that blocks on breach


@pytest.fixture
def monitored(tmp_path: Path) -> tuple[Path, Path]:
    """A signed log whose monitor run blocked classifier_small (signed alert, and a row in the block list)."""
    from policyengine.audit import generate_key

    key_path = tmp_path / "policyengine.key"
    db = write_signed_db(tmp_path / "audit.duckdb", generate_key(key_path), story())
    rules = tmp_path / "risk.policy"
    rules.write_text(POLICY)
    _, blocked = run_monitor(db, load_policy([rules]), key=key_path, now=NOW, clock_override=True)
    assert blocked == (BLOCKED,)
    return db, key_path


def _table(db: Path, statement: Callable[[duckdb.DuckDBPyConnection], object]) -> None:
    """Change the block list alone, as anyone who can write the file can."""
    con = duckdb.connect(str(db))
    try:
        statement(con)
    finally:
        con.close()


def _report(db: Path) -> tuple[list[dict], ReportResult]:
    result = run_named_report(db, "model_blocks")
    return [dict(zip(result.columns, row)) for row in result.rows], result


LATER = NOW + timedelta(hours=2)

# (case, what is done after the signed block, models the rows show still blocked, models a note must name)
CASES: list[tuple[str, Callable[[Path, Path], object], set[str], set[str]]] = [
    ("nothing: the table and the log agree", lambda db, key: None, {BLOCKED}, set()),
    ("a block added only in the table",
     lambda db, key: _table(db, lambda con: add_block(con, "frontier_llm", "risk.frontier_quiet",
                                                      "psi 0.9 breaches < 0.2", LATER)),
     {BLOCKED}, {"frontier_llm"}),
    ("a block lifted only in the table",
     lambda db, key: _table(db, lambda con: lift_blocks(con, BLOCKED, at=LATER, by="mallory", note="quietly")),
     {BLOCKED}, {BLOCKED}),
    ("a block deleted from the table", lambda db, key: _table(db, lambda con: con.execute("DELETE FROM model_blocks")),
     {BLOCKED}, {BLOCKED}),
    ("a signed lift reopened in the table",
     lambda db, key: (unblock(db, BLOCKED, by="risk", note="retrained", key=key),
                      _table(db, lambda con: con.execute("UPDATE model_blocks SET unblocked_at = NULL"))),
     set(), {BLOCKED}),
    ("a lift through `models unblock` with a key (signed)",
     lambda db, key: unblock(db, BLOCKED, by="risk", note="retrained", key=key), set(), set()),
]


@pytest.mark.parametrize(("change", "still_blocked", "noted"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_rows_are_the_signed_records_and_a_note_names_each_model_the_block_list_differs_on(
        monitored: tuple[Path, Path], change: Callable[[Path, Path], object], still_blocked: set[str],
        noted: set[str]) -> None:
    db, key = monitored
    change(db, key)
    rows, result = _report(db)
    assert [(r["model"], r["rule"]) for r in rows] == [(BLOCKED, RULE)]  # only the signed block, never the table's
    assert {r["model"] for r in rows if r["still_blocked"]} == still_blocked
    if not noted:
        assert result.notes == ()
        return
    lead, *details = result.notes
    assert lead.startswith("the block list (model_blocks: not signed") and lead.endswith("the rows are the signed records")
    assert {d.split(" (", 1)[0] for d in details} == noted
    assert all(model in lead for model in noted)


def test_a_signed_block_and_lift_keep_the_columns_the_block_list_had(monitored: tuple[Path, Path]) -> None:
    """Model, rule, reason, when (the instant the monitor judged as of), who lifted it, when and why."""
    db, key = monitored
    unblock(db, BLOCKED, by="risk-officer", note="retrained", key=key)
    (row,), result = _report(db)
    con = duckdb.connect(str(db), read_only=True)
    (listed,) = con.execute("SELECT model, rule, reason, blocked_at, unblocked_by, note FROM model_blocks").fetchall()
    (lifted_at,) = con.execute("SELECT ts FROM audit_log WHERE event = 'model_unblocked'").fetchone()
    con.close()
    assert (row["model"], row["rule"], row["reason"], row["blocked_at"], row["unblocked_by"], row["note"]) == listed
    assert row["blocked_at"] == NOW and row["unblocked_at"] == lifted_at and row["still_blocked"] is False
    assert row["reason"].startswith("psi ") and row["reason"].endswith(" breaches < 0.2")
    assert result.notes == ()


def test_the_command_prints_the_note_in_every_format(monitored: tuple[Path, Path], tmp_path: Path) -> None:
    """Beside the table and in the page; on stderr for CSV and JSON, whose rows have no place for it."""
    db, _ = monitored
    _table(db, lambda con: add_block(con, "frontier_llm", "risk.frontier_quiet", "psi 0.9 breaches < 0.2", LATER))
    table = pe_inprocess("report", "model_blocks", "--db", db)
    assert table.returncode == 0 and "note: frontier_llm (risk.frontier_quiet): the block list has 1 block(s), " \
        "1 open, the signed log no block" in table.stdout
    listed = pe_inprocess("report", "model_blocks", "--db", db, "--format", "json")
    assert [r["model"] for r in json.loads(listed.stdout)] == [BLOCKED]
    assert "note: the block list (model_blocks: not signed" in listed.stderr and "frontier_llm" in listed.stderr
    page = tmp_path / "blocks.html"
    assert pe_inprocess("report", "model_blocks", "--db", db, "--format", "html", "-o", page).returncode == 0
    assert "frontier_llm (risk.frontier_quiet): the block list has 1 block(s)" in page.read_text()


def test_a_database_without_a_block_list_says_it_has_none_to_compare(monitored: tuple[Path, Path]) -> None:
    """The block list shared with --state lives in that store: the signed blocks are shown, and that said."""
    db, _ = monitored
    _table(db, lambda con: con.execute("DROP TABLE model_blocks"))
    rows, result = _report(db)
    assert [r["model"] for r in rows] == [BLOCKED]
    (note,) = result.notes
    assert note.startswith(f"the signed log blocked {BLOCKED}, but the database read has no block list")


def test_a_database_never_monitored_has_no_rows_and_no_note(tmp_path: Path) -> None:
    from policyengine.audit import AuditLog, generate_key

    with AuditLog(tmp_path / "a.duckdb", generate_key(tmp_path / "k.key")) as log:
        log.append("policy_loaded", payload={"files": [], "rules": 0})
    rows, result = _report(tmp_path / "a.duckdb")
    assert (rows, result.notes) == ([], ())


def test_without_now_the_monitor_reads_the_clock_once_for_the_alert_and_the_block(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The signed alert's window_end and the block list's blocked_at are one instant, so the report's equals the table's."""
    import policyengine.reporting.monitor as monitor_module
    from policyengine.audit import generate_key

    ticks = iter(range(1000))

    class Ticking(datetime):  # every read of the clock a second later than the one before
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Ticking:  # type: ignore[override]
            return cls.fromtimestamp((NOW + timedelta(seconds=next(ticks))).timestamp(), tz)

    key_path = tmp_path / "policyengine.key"
    db = write_signed_db(tmp_path / "audit.duckdb", generate_key(key_path), story())
    (tmp_path / "risk.policy").write_text(POLICY)
    monkeypatch.setattr(monitor_module, "datetime", Ticking)
    run_monitor(db, load_policy([tmp_path / "risk.policy"]), key=key_path)
    monkeypatch.undo()
    (row,), _ = _report(db)
    con = duckdb.connect(str(db), read_only=True)
    (listed,) = con.execute("SELECT blocked_at FROM model_blocks").fetchone()
    con.close()
    assert row["blocked_at"] == listed == NOW
