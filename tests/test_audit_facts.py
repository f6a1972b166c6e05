"""audit_facts: the reports' columns equal the signed payloads, tampering with them is caught, and
bias and drift give the same results from the columns as from the payloads (real DuckDB files, real keys)."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policyengine.audit import AuditLog, SigningKey, generate_key, verify_database
from policyengine.audit import facts as facts_module
from policyengine.audit.canonical import canonical_text
from policyengine.audit.facts import FIXED_PATHS, path_of, quote_ident
from policyengine.audit.log import _SMALL_BATCH
from policyengine.reporting.audit_source import _facts_columns, bias_from_audit, drift_from_audit, json_path
from policyengine.reporting.db import open_readonly

REGIONS = ["EU", "US", "APAC", "LATAM"]
CHANNELS = ["api", "email", "phone", "portal"]


def model_call(rng: random.Random, i: int) -> dict:
    """Payloads of varied shape: missing label, numbers of every print form, odd keys, arrays, nulls."""
    region = REGIONS[rng.randrange(4)]
    payload: dict = {
        "model": "classifier_small" if i % 5 else "classifier_large",
        "tokens": 100 + rng.randrange(900),
        "cost_usd": rng.choice([0.00002, 1e-7, 2.5, 1e21, 3]),
        "subject": {"vendor_region": region, "tier": rng.choice([1, 2, None]), "vip": rng.random() < 0.1},
        "output": {"confidence": round(rng.random() + (0.05 if i > 150 else 0.0), 4), "channel": rng.choice(CHANNELS)},
        "tags": ["a", i],
        "key.with.dots": {"x": 1},
        'quote"d': "é\n",
    }
    if rng.random() < 0.9:  # errors and timeouts have no outcome
        payload["outcome"] = "auto_resolved" if rng.random() < 0.4 + 0.1 * REGIONS.index(region) else "manual"
    if i % 3:
        payload["label"] = rng.choice(["auto_resolved", "manual"])
    if i % 17 == 0:
        payload["subject"] = "not an object"  # the same path, a scalar here and an object elsewhere
    return payload


def build(path: Path, key: SigningKey, records: int = 300, seed: int = 7, batch_size: int = 37) -> None:
    rng = random.Random(seed)
    with AuditLog(path, key, batch_size=batch_size, checkpoint_every=100, flush_interval=0) as log:
        for i in range(records):
            log.append("model_call", actor="agent", payload=model_call(rng, i))
            if i % 4 == 0:
                log.append("decision", payload={"model": "classifier_small", "outcome": "manual", "i": i})
            if i == 150:
                log.flush()


# Small batches pass their facts as values, bigger ones as a registered Arrow table (log.py).
@pytest.fixture(scope="module", params=[37, _SMALL_BATCH + 1], ids=["small-batches", "arrow-batches"])
def log_file(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SigningKey]:
    folder = tmp_path_factory.mktemp("facts")
    key = generate_key(folder / "k.key")
    build(folder / "audit.duckdb", key, batch_size=request.param)
    return folder / "audit.duckdb", key


@pytest.fixture
def copy(log_file: tuple[Path, SigningKey], tmp_path: Path) -> tuple[Path, SigningKey]:
    path, key = log_file
    shutil.copy(path, tmp_path / "audit.duckdb")
    return tmp_path / "audit.duckdb", key


def payload_paths(value: object, prefix: tuple[str, ...] = ()) -> set[str]:
    """Every object member path of a payload, written here without the project's code (DuckDB's paths cannot
    name the empty key or one with a backslash: those members get no column)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "" or "\\" in key:
                continue
            found.add("$." + ".".join('"' + k.replace('"', '\\"') + '"' for k in (*prefix, key)))
            found |= payload_paths(inner, (*prefix, key))
    return found


def test_facts_equal_the_payload_values(log_file: tuple[Path, SigningKey]) -> None:
    path, _ = log_file
    con = duckdb.connect(str(path), read_only=True)
    try:
        columns = facts_module.columns(con)
        records = con.execute("SELECT seq, ts, payload::VARCHAR FROM audit_log WHERE event = 'model_call' ORDER BY seq").fetchall()
        facts = con.execute("SELECT * FROM audit_facts ORDER BY seq").fetchall()
        expected = set(FIXED_PATHS)
        for _, _, payload in records:
            expected |= payload_paths(json.loads(payload))
        assert set(columns) == expected
        assert [(f[0], f[1]) for f in facts] == [(r[0], r[1]) for r in records]  # one row per model_call, no other
        for column in columns:
            mismatched = con.execute(
                f"SELECT count(*) FROM audit_facts f JOIN audit_log l USING (seq) "
                f"WHERE f.{quote_ident(column)} IS DISTINCT FROM json_extract_string(l.payload, $p)", {"p": column},
            ).fetchone()[0]
            assert mismatched == 0, column
        # spot values, read back from the payload by hand
        row = dict(zip(["seq", "ts", *columns], facts[1], strict=True))
        payload = json.loads(records[1][2])
        assert row['$."subject"."vendor_region"'] == payload["subject"]["vendor_region"]
        assert row['$."tokens"'] == str(payload["tokens"])
        assert row['$."quote\\"d"'] == "é\n"
    finally:
        con.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=4), json_values, max_size=4))
def test_paths_found_in_python_are_the_paths_duckdb_finds(payload: dict) -> None:
    """The small-batch writer finds paths in Python; the Arrow-batch writer asks json_structure: same set."""
    text = canonical_text(payload)
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE batch AS SELECT 'model_call' AS event, $p AS payload", {"p": text})
        assert set(facts_module.payload_paths(text)) == set(facts_module._discover(con, "batch")) == payload_paths(payload)
    finally:
        con.close()


def duckdb_facts(text: str, paths: list[str]) -> list[str | None]:
    con = duckdb.connect()
    try:
        return con.execute("SELECT json_extract_string($t, $p)", {"t": text, "p": paths}).fetchone()[0] if paths else []
    finally:
        con.close()


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=4), json_values, max_size=4))
def test_facts_printed_in_python_are_the_values_duckdb_reads(payload: dict) -> None:
    """The small-batch writer appends values printed in Python; where it does, they are DuckDB's, character for
    character (control characters, escapes, every number form, nested objects and arrays)."""
    text = canonical_text(payload)
    found = facts_module.payload_facts(text)
    if found is not None:
        assert list(found) == facts_module.payload_paths(text)
        assert list(found.values()) == duckdb_facts(text, list(found))


FACT_CASES = [  # (payload, printed in Python?) - values compared with DuckDB's in the test
    ({"a": "x\u000by", "b": {"c": "\u000e\u001f\u007f/é\u2028\"\\"}}, True),  # DuckDB escapes \u000B upper case
    ({"n": [1e21, 2.5e-5, 1e-7, 0.1, -0.5, 1.5e300]}, True),  # no "+" in exponents, fixed forms as RFC 8785
    ({"tokens": 2**53, "big": {"x": 1}}, True),
    ({"tokens": 2**53 + 2}, False),  # beyond 2**53 DuckDB may read a long integer either way
    ({"cost": 1e20}, False),  # an integral double below 1e21: canonical text prints a long integer
    ({"cost": 1e300, "c": -1e21}, True),
    ({"a\\b": 1, "": 2, "c": 3}, True),  # no column for members DuckDB's paths cannot name
    ({"nested": {"a\\b": {"x": 1}}}, True),
    ({"empty": {}, "list": [], "none": None, "yes": True, "s": ""}, True),
]


@pytest.mark.parametrize(("payload", "printed"), FACT_CASES)
def test_facts_printed_in_python_or_left_to_duckdb(payload: dict, printed: bool) -> None:
    text = canonical_text(payload)
    found = facts_module.payload_facts(text)
    assert (found is not None) == printed
    if found is not None:
        assert list(found.values()) == duckdb_facts(text, list(found))


@pytest.mark.parametrize("batch_size", [1, _SMALL_BATCH + 1], ids=["appender", "arrow"])
def test_members_no_json_path_can_name_do_not_stop_the_log(tmp_path: Path, batch_size: int) -> None:
    """A payload key DuckDB's paths cannot spell ("" or with a backslash) used to fail the writer for good."""
    key = generate_key(tmp_path / "k.key")
    odd = [{"": 1, "model": "m"}, {"a\\b": {"c": 2}}, {"subject": {"": "x", "region": "EU"}}]
    with AuditLog(tmp_path / "a.duckdb", key, batch_size=batch_size) as log:
        for i in range(batch_size + 2):
            log.append("model_call", payload=odd[i % 3])
        log.flush()
    con = duckdb.connect(str(tmp_path / "a.duckdb"), read_only=True)
    try:
        assert set(facts_module.columns(con)) == {*FIXED_PATHS, '$."subject"', '$."subject"."region"'}
        assert con.execute("SELECT count(*) FROM audit_facts").fetchone()[0] == batch_size + 2
    finally:
        con.close()
    assert verify_database(tmp_path / "a.duckdb", [key.public]).ok


def test_a_gateway_model_call_takes_the_appender(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway's one-record commits append their facts: no json_extract_string statement is run."""
    def no_statement(*args: object) -> None:
        raise AssertionError("the facts statement ran")

    monkeypatch.setattr(facts_module, "_insert_rows", no_statement)
    payload = {"model": "m", "tokens": 40, "cost_usd": 1.23e-5, "latency_ms": 1.234, "stream": False, "route": None,
               "decisions": [{"effect": "allow"}], "guard": {"pii": [], "response": {"pii": ["email"]}},
               "usage": {"prompt_tokens": 10}, "outcome": "ok", "prompt_sha256": "ab" * 32}
    key = generate_key(tmp_path / "k.key")
    with AuditLog(tmp_path / "a.duckdb", key) as log:
        for i in range(3):
            log.wait_durable(log.append("model_call", payload={**payload, "tokens": i}))
    assert verify_database(tmp_path / "a.duckdb", [key.public]).ok


def test_path_of_matches_the_reports_json_path() -> None:
    assert path_of(("subject", "vendor_region")) == json_path("subject.vendor_region")
    assert path_of(('a"b',)) == json_path('a"b')


def test_log_written_before_audit_facts_gets_them_on_open(copy: tuple[Path, SigningKey]) -> None:
    path, key = copy
    con = duckdb.connect(str(path))
    before = con.execute("SELECT * FROM audit_facts ORDER BY seq").fetchall()
    con.execute("DROP TABLE audit_facts")
    con.close()
    assert verify_database(path, [key.public]).ok  # an older log simply has no facts to check
    with AuditLog(path, key):
        pass
    con = duckdb.connect(str(path), read_only=True)
    after = con.execute("SELECT * FROM audit_facts ORDER BY seq").fetchall()
    con.close()
    assert sorted(map(sorted_row, after)) == sorted(map(sorted_row, before))  # same values (columns may be reordered)
    assert verify_database(path, [key.public]).ok


def sorted_row(row: tuple) -> tuple:
    return (row[0], row[1], tuple(sorted(v for v in row[2:] if v is not None)))


def test_a_tampered_fact_changes_the_report_and_verify_catches_it(copy: tuple[Path, SigningKey]) -> None:
    path, key = copy
    window = {"model": "classifier_small", "group": "subject.vendor_region", "positives": ["auto_resolved"],
              "start": datetime.now(UTC) - timedelta(days=1), "end": datetime.now(UTC) + timedelta(days=1)}
    con = duckdb.connect(str(path))
    con.execute('UPDATE audit_facts SET "$.""subject"".""vendor_region""" = \'EU\' '
                'WHERE "$.""subject"".""vendor_region""" = \'US\'')
    first = con.execute("SELECT min(seq) FROM audit_log WHERE payload->>'$.subject.vendor_region' = 'US'").fetchone()[0]
    con.close()
    ro = open_readonly(path)
    try:
        from_facts = bias_from_audit(ro, **window)
        from_payload = bias_from_audit(ro, **window, use_facts=False)
    finally:
        ro.close()
    assert from_facts != from_payload  # the report really reads the columns
    failure = verify_database(path, [key.public]).failure
    assert failure is not None and (failure.kind, failure.seq) == ("modified", first), failure


def test_an_edited_payload_whose_fact_is_left_alone_is_caught_too(copy: tuple[Path, SigningKey]) -> None:
    path, key = copy
    con = duckdb.connect(str(path))
    seq = con.execute("SELECT min(seq) FROM audit_log WHERE event = 'model_call' AND payload->>'$.outcome' = 'manual'").fetchone()[0]
    con.execute("UPDATE audit_log SET payload = replace(payload::VARCHAR, '\"manual\"', '\"auto_resolved\"') WHERE seq = ?", [seq])
    con.close()
    failure = verify_database(path, [key.public]).failure
    assert failure is not None and (failure.kind, failure.seq) == ("modified", seq), failure


def reports(path: Path, use_facts: bool) -> list:
    con = open_readonly(path)
    try:
        seqs = con.execute("SELECT ts FROM audit_log WHERE event = 'model_call' ORDER BY seq").fetchall()
        start, split, end = seqs[0][0], seqs[len(seqs) // 2][0], seqs[-1][0] + timedelta(seconds=1)
        out = [
            bias_from_audit(con, model="classifier_small", group="subject.vendor_region", positives=["auto_resolved"],
                            start=start, end=end, min_samples=5, use_facts=use_facts),
            bias_from_audit(con, model="classifier_large", group="subject.tier", positives=["manual"],
                            start=start, end=end, use_facts=use_facts),
            bias_from_audit(con, model="classifier_small", group="subject", positives=["auto_resolved"],
                            start=start, end=end, use_facts=use_facts),  # an object path: its JSON text groups
            drift_from_audit(con, model="classifier_small", path="output.confidence", start=start, split=split, end=end,
                             use_facts=use_facts),
            drift_from_audit(con, model="classifier_small", path="output.confidence", start=start, split=split, end=end,
                             metric="ks", use_facts=use_facts),
            drift_from_audit(con, model="classifier_small", path="output.channel", start=start, split=split, end=end,
                             metric="chi2", period="hour", use_facts=use_facts),
            drift_from_audit(con, model="classifier_small", path="cost_usd", start=start, split=split, end=end,
                             metric="chi2", use_facts=use_facts),  # 1e21 and 1e-7 as DuckDB prints them
        ]
        used = [_facts_columns(con, json_path(p)) for p in ("subject.vendor_region", "subject", "output.channel")]
    finally:
        con.close()
    return [out, used]


def _rounded(value: object) -> object:
    """Results with floats to 12 digits: DuckDB's parallel sums may add in another order from run to run."""
    if dataclasses.is_dataclass(value):
        return _rounded(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item) for item in value]
    return float(f"{value:.12g}") if isinstance(value, float) else value


def test_reports_are_identical_from_facts_and_from_payloads(log_file: tuple[Path, SigningKey]) -> None:
    path, _ = log_file
    (from_facts, used), (from_payload, _) = reports(path, True), reports(path, False)
    assert all(column is not None for column in used)  # the facts really were read
    assert _rounded(from_facts) == _rounded(from_payload)
    assert from_facts[0].groups and from_facts[3].n_reference and from_facts[3].n_current


def test_paths_beyond_the_column_cap_read_the_payloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(facts_module, "MAX_COLUMNS", 5)
    key = generate_key(tmp_path / "k.key")
    build(tmp_path / "audit.duckdb", key, records=120)
    con = open_readonly(tmp_path / "audit.duckdb")
    try:
        assert len(facts_module.columns(con)) == 5
        assert _facts_columns(con, json_path("output.channel")) is None  # no column: the report reads payloads
    finally:
        con.close()
    assert verify_database(tmp_path / "audit.duckdb", [key.public]).ok
    monkeypatch.setattr(facts_module, "MAX_COLUMNS", 200)
    assert reports(tmp_path / "audit.duckdb", True)[0] == reports(tmp_path / "audit.duckdb", False)[0]


def test_a_snapshot_carries_the_facts(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k.key")
    with AuditLog(tmp_path / "live.duckdb", key) as log:
        log.append("model_call", payload={"model": "m", "outcome": "ok", "subject": {"r": "EU"}})
        log.snapshot(tmp_path / "snap.duckdb")
    con = duckdb.connect(str(tmp_path / "snap.duckdb"), read_only=True)
    try:
        assert con.execute('SELECT "$.""subject"".""r""" FROM audit_facts').fetchall() == [("EU",)]
    finally:
        con.close()
    assert verify_database(tmp_path / "snap.duckdb", [key.public]).ok


BIAS_WINDOW = {"model": "classifier_small", "group": "subject.vendor_region", "positives": ["auto_resolved"],
               "min_samples": 1}


def bias_both_ways(path: Path) -> tuple[str | None, object, object]:
    """(the column the report would read, bias as the report reads it, bias from the payloads)."""
    window = {**BIAS_WINDOW, "start": datetime.now(UTC) - timedelta(days=1), "end": datetime.now(UTC) + timedelta(days=1)}
    ro = open_readonly(path)
    try:
        return (_facts_columns(ro, json_path("subject.vendor_region")), bias_from_audit(ro, **window),
                bias_from_audit(ro, **window, use_facts=False))
    finally:
        ro.close()


def test_a_servers_facts_follow_its_answers_and_a_crash_between_leaves_a_tail_the_next_writer_fills(
        tmp_path: Path) -> None:
    """Behind a server's answers (``flush(answer_first=True)``) a commit holds the records and their checkpoint;
    their facts follow in ``write_facts``. A writer stopped in between leaves the last records without facts:
    verify notes them (it is no tampering), reports read those payloads, and the next writer fills them in."""
    path, key = tmp_path / "a.duckdb", generate_key(tmp_path / "k.key")
    rng = random.Random(11)
    log = AuditLog(path, key, flush_interval=0)
    for i in range(40):
        log.append("model_call", payload=model_call(rng, i))
    log.flush()  # facts in the records' own transaction
    for i in range(40, 52):
        log.append("model_call", payload=model_call(rng, i))
        log.append("decision", payload={"i": i})
        log.flush(answer_first=True)
        if i < 46:
            log.write_facts()  # what a server does once it has answered
    log.abandon()  # killed before writing the facts of the last six

    report = verify_database(path, [key.public])
    assert report.ok, report.failure
    assert report.notes == ("the last 6 model_call record(s) have no audit_facts row yet (their writer stopped "
                            "before writing them; reports read their payloads, and the next writer to open the "
                            "log fills them in)",)
    column, as_read, from_payloads = bias_both_ways(path)
    assert column is None and _rounded([as_read]) == _rounded([from_payloads])  # the tail is counted: payloads read

    forged = tmp_path / "forged.duckdb"
    shutil.copy(path, forged)
    con = duckdb.connect(str(forged))
    first = con.execute("SELECT min(seq) FROM audit_facts").fetchone()[0]
    con.execute("DELETE FROM audit_facts WHERE seq = $s", {"s": first})  # a hole before the tail is tampering
    con.close()
    failure = verify_database(forged, [key.public]).failure
    assert failure is not None and (failure.kind, failure.seq) == ("modified", first), failure

    with AuditLog(path, key):  # the next writer fills the tail in from the payloads
        pass
    report = verify_database(path, [key.public])
    assert report.ok and report.notes == ()
    column, as_read, from_payloads = bias_both_ways(path)
    assert column is not None and _rounded([as_read]) == _rounded([from_payloads])


def test_facts_left_behind_are_written_before_any_later_ones(tmp_path: Path) -> None:
    """A flush that writes facts itself (a later batch, close) first writes those left behind: the facts stay a
    prefix of the log, so a missing one is always tampering or a tail."""
    path, key = tmp_path / "a.duckdb", generate_key(tmp_path / "k.key")
    with AuditLog(path, key, flush_interval=0) as log:
        log.append("model_call", payload={"model": "m", "outcome": "ok", "n": 1})
        log.flush(answer_first=True)
        log.append("model_call", payload={"model": "m", "outcome": "ok", "n": 2})
        log.flush()
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert con.execute('SELECT seq, "$.""n""" FROM audit_facts ORDER BY seq').fetchall() == [(1, "1"), (2, "2")]
    finally:
        con.close()
    assert verify_database(path, [key.public]).notes == ()


def test_once_a_caller_flushes_answer_first_the_writer_thread_leaves_the_facts_to_it(tmp_path: Path) -> None:
    """The log's timed flush writing the facts took the database from under the next answer's commit (the
    gateway's p99); a caller that flushes answer-first writes them when no answer waits, or close does."""
    path, key = tmp_path / "a.duckdb", generate_key(tmp_path / "k.key")
    with AuditLog(path, key, flush_interval=0.01) as log:
        log.append("model_call", payload={"model": "m", "outcome": "ok", "n": 1})
        log.flush(answer_first=True)
        log.append("model_call", payload={"model": "m", "outcome": "ok", "n": 2})  # buffered: the timer commits it
        deadline = time.monotonic() + 10
        while log.flushed < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # several more ticks of the writer thread
        assert (log.flushed, log.facts_due) == (2, 2)
        log.write_facts()
        assert log.facts_due == 0
    assert verify_database(path, [key.public]).notes == ()


def test_facts_prepared_ahead_are_written_without_printing_them_again(tmp_path: Path, monkeypatch) -> None:
    """A server prepares the answered records' facts (``prepare_facts``) outside the database; the facts
    transaction then only appends and commits what was printed."""
    path, key = tmp_path / "a.duckdb", generate_key(tmp_path / "k.key")
    rng = random.Random(3)
    with AuditLog(path, key, flush_interval=0) as log:
        for i in range(5):
            log.append("model_call", payload=model_call(rng, i))
            log.flush(answer_first=True)
        log.prepare_facts()
        log.append("model_call", payload=model_call(rng, 5))  # not prepared: printed in the transaction
        log.flush(answer_first=True)
        printed: list[str] = []
        real = facts_module.payload_facts
        monkeypatch.setattr(facts_module, "payload_facts", lambda text: printed.append(text) or real(text))
        log.write_facts()
        assert log.facts_due == 0 and len(printed) == 1
    report = verify_database(path, [key.public])
    assert report.ok and report.notes == (), report.failure  # verify recomputes every facts row from its payload


def test_a_write_that_raises_is_rolled_back_and_the_next_one_commits(tmp_path: Path, monkeypatch) -> None:
    """An error that is not DuckDB's inside a transaction (a bug, MemoryError) rolls it back: it must not leave
    the transaction open, which failed every later write on BEGIN."""
    path, key = tmp_path / "a.duckdb", generate_key(tmp_path / "k.key")
    with AuditLog(path, key, flush_interval=0) as log:
        log.append("model_call", payload={"model": "m", "outcome": "ok", "n": 1})
        log.flush(answer_first=True)
        real = log._facts.add_rows

        def broken(con, rows, prepared=None):  # noqa: ANN001, ANN202 - the FactsWriter's own signature
            raise MemoryError("no room")

        monkeypatch.setattr(log._facts, "add_rows", broken)
        with pytest.raises(MemoryError):
            log.write_facts()
        monkeypatch.setattr(log._facts, "add_rows", real)
        log.append("model_call", payload={"model": "m", "outcome": "ok", "n": 2})
        log.flush()
    report = verify_database(path, [key.public])
    assert report.ok and report.records == 2 and report.notes == (), report.failure


def test_an_answers_commit_does_not_wait_for_a_facts_transaction_under_way(tmp_path: Path, monkeypatch) -> None:
    """Facts left behind answers are written on a cursor of their own (``write_facts``): the next answer's
    records and checkpoint commit while that facts transaction is still open, instead of queueing behind it
    (256 facts rows held an answer 10-25 ms: the gateway's p99)."""
    path, key = tmp_path / "a.duckdb", generate_key(tmp_path / "k.key")
    rng = random.Random(5)
    with AuditLog(path, key, flush_interval=0) as log:
        for i in range(3):
            log.append("model_call", payload=model_call(rng, i))
            log.flush(answer_first=True)
        entered, release = threading.Event(), threading.Event()
        real = log._facts.add_rows

        def slow(con, rows, prepared=None):  # noqa: ANN001, ANN202 - the FactsWriter's own signature
            entered.set()
            release.wait(30)
            return real(con, rows, prepared)

        monkeypatch.setattr(log._facts, "add_rows", slow)
        facts = threading.Thread(target=log.write_facts)
        facts.start()
        assert entered.wait(30)
        log.append("model_call", payload=model_call(rng, 3))
        answer = threading.Thread(target=log.flush, kwargs={"answer_first": True})
        answer.start()
        answer.join(20)  # a liveness bound: on a log whose facts hold the records' lock this never ends first
        committed = not answer.is_alive()
        release.set()
        facts.join()
        answer.join()
        assert committed, "the answer's commit waited for the facts transaction"
        assert (log.flushed, log.facts_due) == (4, 1)  # the facts of the answer committed meanwhile follow
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert [s for (s,) in con.execute("SELECT seq FROM audit_facts ORDER BY seq").fetchall()] == [1, 2, 3, 4]
    finally:
        con.close()
    report = verify_database(path, [key.public])
    assert report.ok and report.notes == (), report.failure


def test_facts_written_beside_answers_stay_complete_and_in_order(tmp_path: Path) -> None:
    """One thread commits answers while another prepares and writes their facts, as a server's two threads
    do: every model_call gets exactly its facts row, in seq order, and verify recomputes each from its payload
    (new paths keep coming, so facts transactions add columns while records commit)."""
    path, key = tmp_path / "a.duckdb", generate_key(tmp_path / "k.key")
    rng = random.Random(9)
    payloads = [{**model_call(rng, i), f"late{i // 20}": i} for i in range(300)]
    done = threading.Event()
    errors: list[BaseException] = []
    with AuditLog(path, key, flush_interval=0) as log:

        def facts_writer() -> None:
            try:
                while not done.is_set():
                    log.prepare_facts()
                    log.write_facts()
            except BaseException as err:  # noqa: BLE001 - reported by the test below
                errors.append(err)

        writer = threading.Thread(target=facts_writer)
        writer.start()
        for i, payload in enumerate(payloads):
            log.append("model_call", payload=payload)
            if i % 7 == 0:
                log.append("decision", payload={"i": i})  # no facts: the due list skips it
            if i % 3 == 0:
                log.flush(answer_first=True)
        done.set()
        writer.join()
        log.flush(answer_first=True)
    assert errors == []
    con = duckdb.connect(str(path), read_only=True)
    try:
        facts = [s for (s,) in con.execute("SELECT seq FROM audit_facts ORDER BY seq").fetchall()]
        calls = [s for (s,) in con.execute("SELECT seq FROM audit_log WHERE event = 'model_call' ORDER BY seq")
                 .fetchall()]
    finally:
        con.close()
    assert facts == calls and len(calls) == 300
    report = verify_database(path, [key.public])
    assert report.ok and report.notes == (), report.failure
