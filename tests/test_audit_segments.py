"""Rolled audit segments: the chain between them, tampering with it, pruning above the retention floor, and a
real ``serve --roll-records`` whose folder ``audit verify --dir`` checks (docs/audit.md, "Segments")."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import pytest

from policyengine.audit import AuditError, AuditLog, SigningKey, generate_key
from policyengine.audit.segments import (
    PRUNE_LOG,
    RollPolicy,
    SegmentedLog,
    months_before,
    prune_segments,
    read_segment,
    verify_segments,
)

from server_process import ALLOW, DENY, RULES, Server


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def seg(folder: Path, index: int, series: str = "audit") -> Path:
    return folder / f"{series}.{index:06d}.duckdb"


def write_series(folder: Path, key: SigningKey, records: int, *, series: str = "audit", every: int = 4) -> list[int]:
    """``records`` decision-like records through a SegmentedLog rolling every ``every`` records; their seqs."""
    with SegmentedLog(folder, series, key, roll=RollPolicy(records=every), flush_interval=0) as log:
        seqs = [log.append("decision", actor=f"user{i}", payload={"i": i, "series": series}) for i in range(records)]
        log.flush()
    return seqs


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return generate_key(tmp_path / "k.key")


@pytest.fixture
def folder(tmp_path: Path, key: SigningKey) -> Path:
    """Segments 1..4 of series ``audit`` (started, 3 decisions, seal; the newest open)."""
    out = tmp_path / "segments"
    out.mkdir()
    write_series(out, key, 10)
    assert [p.name for p in sorted(out.glob("*.duckdb"))] == [seg(out, i).name for i in range(1, 5)]
    return out


# -- writing and the chain ---------------------------------------------------


def test_each_segment_starts_with_a_link_to_the_previous_final_checkpoint(folder: Path, key: SigningKey) -> None:
    infos = [read_segment(seg(folder, i)) for i in range(1, 5)]
    assert infos[0].started is not None and infos[0].started["previous"] is None
    for before, after in zip(infos, infos[1:], strict=False):
        assert before.sealed and before.last_payload is not None
        assert before.last_payload["next"] == after.path.name
        link = after.started["previous"] if after.started else None
        assert link is not None and before.checkpoint is not None
        assert (link["origin"], link["tree_size"], link["root"]) == (
            before.checkpoint.origin, before.checkpoint.tree_size, before.checkpoint.root.hex())
        assert after.started["records_before"] == before.started["records_before"] + before.records
    assert not infos[-1].sealed  # the newest segment is open: a restart continues it
    report = verify_segments(folder, [key.public])
    assert report.ok, report.summary()
    assert [s["first_seq"] for s in report.segments] == [1, 6, 11, 16]


def test_the_first_checkpoint_of_a_segment_signs_the_link(folder: Path) -> None:
    con = duckdb.connect(str(seg(folder, 2)), read_only=True)
    sizes = [r[0] for r in con.execute("SELECT tree_size FROM audit_checkpoints ORDER BY tree_size").fetchall()]
    con.close()
    assert sizes[0] == 1  # record 1 (segment_started) has a checkpoint of its own


def test_seqs_count_across_the_series_and_a_restart_continues_the_open_segment(tmp_path: Path, key: SigningKey) -> None:
    seqs = write_series(tmp_path, key, 7)
    more = write_series(tmp_path, key, 3)
    assert more[0] > seqs[-1]
    report = verify_segments(tmp_path, [key.public])
    assert report.ok, report.summary()
    con = duckdb.connect(":memory:")
    by_seq: dict[int, int] = {}
    for s in report.segments:
        con.execute("ATTACH $path AS x (READ_ONLY)", {"path": str(tmp_path / s["file"])})
        rows = con.execute("SELECT seq, payload->>'$.i' FROM x.audit_log WHERE event = 'decision'").fetchall()
        con.execute("DETACH x")
        by_seq.update({s["first_seq"] - 1 + seq: int(i) for seq, i in rows})
    assert [by_seq[s] for s in seqs] == list(range(7))
    assert [by_seq[s] for s in more] == list(range(3))


def test_a_segment_left_without_records_is_started_again(tmp_path: Path, key: SigningKey) -> None:
    write_series(tmp_path, key, 5)  # segments 1 and 2 (open)
    AuditLog(seg(tmp_path, 3), key, origin="stale-guess", flush_interval=0).close()  # stopped before record 1
    write_series(tmp_path, key, 1)
    report = verify_segments(tmp_path, [key.public])
    assert report.ok, report.summary()
    assert [s["index"] for s in report.segments] == [1, 2]  # segment 2 was open: it was continued


def test_roll_by_bytes_and_by_age(tmp_path: Path, key: SigningKey) -> None:
    with SegmentedLog(tmp_path, "b", key, roll=RollPolicy(bytes=1), flush_interval=0) as log:
        for i in range(600):
            log.append("decision", payload={"i": i})
    assert len(list(tmp_path.glob("b.*.duckdb"))) >= 2
    with SegmentedLog(tmp_path, "a", key, roll=RollPolicy(age=0.05), flush_interval=0) as log:
        log.append("decision", payload={"i": 0})
        time.sleep(0.1)
        log.append("decision", payload={"i": 1})
    assert len(list(tmp_path.glob("a.*.duckdb"))) == 2
    assert verify_segments(tmp_path, [key.public]).ok


@pytest.mark.parametrize(("policy", "message"), [
    (dict(records=1), "at least 2"), (dict(bytes=0), "positive"), (dict(age=0), "positive"), (dict(), "roll limit"),
])
def test_bad_roll_limits_are_refused(tmp_path: Path, key: SigningKey, policy: dict, message: str) -> None:
    with pytest.raises(AuditError, match=message):
        SegmentedLog(tmp_path, "x", key, roll=RollPolicy(**policy))


# -- tampering ---------------------------------------------------------------


def _remove_middle(folder: Path, key: SigningKey) -> None:
    seg(folder, 2).unlink()


def _remove_first(folder: Path, key: SigningKey) -> None:
    seg(folder, 1).unlink()


def _swap(folder: Path, key: SigningKey) -> None:
    seg(folder, 2).rename(folder / "tmp")
    seg(folder, 3).rename(seg(folder, 2))
    (folder / "tmp").rename(seg(folder, 3))


def _edit_link(folder: Path, key: SigningKey) -> None:
    """The link's root edited in place (not re-signed): segment 3 no longer verifies by itself."""
    con = duckdb.connect(str(seg(folder, 3)))
    con.execute("UPDATE audit_log SET payload = json_merge_patch(payload, "
                "'{\"previous\": {\"root\": \"00\"}}') WHERE seq = 1")
    con.close()


def _resigned_bad_link(folder: Path, key: SigningKey) -> None:
    """Segment 3 rewritten by the key holder with a link to a root segment 2 never had: it verifies alone."""
    info = read_segment(seg(folder, 3))
    assert info.started is not None and info.checkpoint is not None
    seg(folder, 4).unlink()
    seg(folder, 3).unlink()
    started = {**info.started, "previous": {**info.started["previous"], "root": "ab" * 32}}
    with AuditLog(seg(folder, 3), key, origin=info.checkpoint.origin, flush_interval=0) as log:
        log.append("segment_started", payload=started)


def _modify_record(folder: Path, key: SigningKey) -> None:
    con = duckdb.connect(str(seg(folder, 2)))
    con.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")
    con.close()


def _drop_seal(folder: Path, key: SigningKey) -> None:
    """Segment 2 rewritten by the key holder without its seal: it verifies alone, but segments follow it."""
    con = duckdb.connect(str(seg(folder, 2)), read_only=True)
    rows = con.execute("SELECT event, actor, payload::VARCHAR, origin FROM audit_log WHERE seq < 4 ORDER BY seq").fetchall()
    con.close()
    seg(folder, 2).unlink()
    with AuditLog(seg(folder, 2), key, origin=rows[0][3], flush_interval=0) as log:
        for event, actor, payload, _ in rows:
            log.append(event, actor=actor, payload=json.loads(payload))


def _foreign_segment(folder: Path, key: SigningKey) -> None:
    other = folder.parent / "other"
    other.mkdir()
    write_series(other, key, 10)
    shutil.copy(seg(other, 2), seg(folder, 2))


def _copied_under_another_name(folder: Path, key: SigningKey) -> None:
    """A sealed segment copied in as a whole log: it verifies alone, and query and reports read it twice."""
    shutil.copy(seg(folder, 2), folder / "backup.duckdb")


def _copied_with_seven_digits(folder: Path, key: SigningKey) -> None:
    shutil.copy(seg(folder, 2), folder / "audit.0000002.duckdb")


def _pruned(folder: Path, key: SigningKey) -> Path:
    """Segments 1..3 pruned (as if a year old); their copies kept in ``saved``."""
    saved = folder.parent / "saved"
    saved.mkdir()
    for i in (1, 2, 3):
        shutil.copy(seg(folder, i), saved / seg(folder, i).name)
    later = datetime.now(UTC) + timedelta(days=400)
    assert len(prune_segments(folder, later, key, now=later).dropped) == 3
    return saved


def _pruned_segment_put_back_modified(folder: Path, key: SigningKey) -> None:
    """Reports read every file of the folder, a pruned one put back too: it was only noted, never checked."""
    saved = _pruned(folder, key)
    shutil.copy(saved / seg(folder, 1).name, seg(folder, 1))
    con = duckdb.connect(str(seg(folder, 1)))
    con.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")
    con.close()


def _other_segment_under_a_pruned_name(folder: Path, key: SigningKey) -> None:
    saved = _pruned(folder, key)
    shutil.copy(saved / seg(folder, 2).name, seg(folder, 1))


def _segments_left_after_a_prune_deleted(folder: Path, key: SigningKey) -> None:
    """A prune keeps a series' newest segment, so a pruned series with no segment left lost its tail."""
    write_series(folder, key, 2, series="w1")  # another series keeps the folder from being empty
    _pruned(folder, key)
    seg(folder, 4).unlink()


TAMPERING: list[tuple[str, Callable[[Path, SigningKey], None], int | str, str, int, str]] = [
    # (case, tamper, failing segment, kind, seq, words in the message)
    ("segment removed from the middle", _remove_middle, 3, "segment_missing", 1, "audit.000002.duckdb"),
    ("first segment removed", _remove_first, 2, "segment_missing", 1, "audit.000001.duckdb"),
    ("segments swapped", _swap, 2, "segment_misplaced", 1, "segment 3"),
    ("link edited in place", _edit_link, 3, "modified", 1, "leaf hash"),
    ("link re-signed to another root", _resigned_bad_link, 3, "chain_broken", 1, "audit.000002.duckdb"),
    ("record modified in a sealed segment", _modify_record, 2, "modified", 3, "leaf hash"),
    ("seal dropped and re-signed", _drop_seal, 2, "not_sealed", 3, "segment_sealed"),
    ("segment of another series copied in", _foreign_segment, 2, "segment_misplaced", 1, "origin"),
    # each of these verified OK
    ("segment copied in under another name", _copied_under_another_name, "backup.duckdb", "duplicated", 1,
     "as audit.000002.duckdb does"),
    ("segment copied in with a seven-digit index", _copied_with_seven_digits, "audit.0000002.duckdb", "duplicated", 1,
     "read its records twice"),
    ("pruned segment put back modified", _pruned_segment_put_back_modified, 1, "modified", 3, "leaf hash"),
    ("another segment under a pruned segment's name", _other_segment_under_a_pruned_name, 1, "segment_misplaced", 1,
     "not the segment pruned"),
    ("every segment left after a prune deleted", _segments_left_after_a_prune_deleted, 4, "segment_missing", 1,
     "newest segment"),
]


@pytest.mark.parametrize(("case", "tamper", "segment", "kind", "seq", "words"), TAMPERING,
                         ids=[t[0] for t in TAMPERING])
def test_tampering_is_named_by_segment_and_seq(folder: Path, key: SigningKey, case: str,
                                              tamper: Callable[[Path, SigningKey], None], segment: int | str,
                                              kind: str, seq: int, words: str) -> None:
    assert verify_segments(folder, [key.public]).ok
    tamper(folder, key)
    report = verify_segments(folder, [key.public])
    assert not report.ok, case
    failure = report.failure
    assert failure is not None
    named = seg(folder, segment).name if isinstance(segment, int) else segment
    assert (Path(failure.segment).name, failure.kind, failure.seq) == (named, kind, seq), failure
    assert words in failure.message, failure.message


def test_cli_verify_dir_reports_the_failing_segment_in_json_and_one_line(folder: Path, tmp_path: Path) -> None:
    ok = run(tmp_path, "audit", "verify", "--dir", str(folder), "--pubkey", "k.key.pub.pem")
    assert ok.returncode == 0, ok.stderr
    assert "OK, 1 series (audit), 4 segments, 17 records" in ok.stdout
    seg(folder, 2).unlink()
    bad = run(tmp_path, "audit", "verify", "--dir", str(folder), "--pubkey", "k.key.pub.pem", "--json")
    assert bad.returncode == 1
    body = json.loads(bad.stdout)
    assert body["ok"] is False
    assert body["failure"]["kind"] == "segment_missing"
    assert body["failure"]["segment"].endswith("audit.000003.duckdb")
    line = run(tmp_path, "audit", "verify", "--dir", str(folder), "--pubkey", "k.key.pub.pem")
    assert line.returncode == 1 and "Traceback" not in line.stderr
    assert line.stderr.strip().splitlines()[0].endswith("segment 2 of series audit is gone")
    missing = run(tmp_path, "audit", "verify", "--dir", str(tmp_path / "nope"), "--pubkey", "k.key.pub.pem")
    assert missing.returncode == 1 and missing.stderr.strip() == f"error: {tmp_path / 'nope'}: no such folder of audit segments"


def test_several_series_verify_and_query_as_one(tmp_path: Path, key: SigningKey) -> None:
    for worker in (0, 1):
        write_series(tmp_path, key, 9, series=f"audit.worker{worker}")
    report = verify_segments(tmp_path, [key.public])
    assert report.ok, report.summary()
    assert {s["series"] for s in report.segments} == {"audit.worker0", "audit.worker1"}
    done = run(tmp_path, "query", "SELECT count(*) AS n, count(DISTINCT origin) AS logs FROM audit_log "
               "WHERE event = 'decision'", "--db", str(tmp_path), "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"n": 18, "logs": 6}]
    refused = run(tmp_path, "query", "ATTACH 'x.duckdb' AS y", "--db", str(tmp_path))
    assert refused.returncode == 1 and "not a read statement" in refused.stderr


# -- pruning -----------------------------------------------------------------


def test_prune_refuses_a_segment_younger_than_the_floor_and_drops_nothing(folder: Path, key: SigningKey) -> None:
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(AuditError, match=r"audit.000001.duckdb: its newest record .* younger than the retention floor"):
        prune_segments(folder, datetime.now(UTC) + timedelta(days=1), key)
    assert sorted(p.name for p in folder.iterdir()) == before


@pytest.mark.parametrize(("args", "message"), [
    (["--retention-months", "5"], "below the floor of 6 months"),
    ([], "younger than the retention floor"),
    (["--before", "yesterday-ish"], "--before: 'yesterday-ish' is not an ISO 8601 time"),
])
def test_cli_prune_refusals_are_one_line(folder: Path, tmp_path: Path, args: list[str], message: str) -> None:
    before = ["--before", (datetime.now(UTC) + timedelta(days=1)).isoformat()]
    done = run(tmp_path, "audit", "prune", "--dir", str(folder), *(before if "--before" not in args else []), *args,
               "--key", "k.key")
    assert done.returncode == 1, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert len(list(folder.glob("audit.*.duckdb"))) == 4


def test_prune_judges_a_segment_by_its_youngest_record_when_the_clock_stepped_back(
        tmp_path: Path, key: SigningKey, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer whose clock stepped back a year (NTP, a VM restore) seals segment 1 with an old ts after young
    decisions: the last record's ts is not the newest, and the young decisions must stay above the floor."""
    from policyengine.audit import log as audit_log

    real = datetime.now(UTC)
    calls = iter(range(10_000))
    stepped = (real - timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    young = real.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    monkeypatch.setattr(audit_log, "utc_now_text", lambda: young if next(calls) < 4 else stepped)
    folder = tmp_path / "segments"
    folder.mkdir()
    write_series(folder, key, 10)  # segment 1: started and 3 decisions now, then its seal a year back
    monkeypatch.undo()
    assert read_segment(seg(folder, 1)).last_ts == stepped
    with pytest.raises(AuditError, match=r"audit.000001.duckdb: its newest record .* younger than the retention floor"):
        prune_segments(folder, real + timedelta(days=1), key, now=real)
    assert len(list(folder.glob("audit.*.duckdb"))) == 4


def test_prune_old_segments_records_them_and_the_chain_still_verifies(folder: Path, key: SigningKey) -> None:
    later = datetime.now(UTC) + timedelta(days=400)  # as if the segments were a year old
    dry = prune_segments(folder, later, key, now=later, dry_run=True)
    assert [e["file"] for e in dry.dropped] == [seg(folder, i).name for i in (1, 2, 3)]
    assert len(list(folder.glob("audit.*.duckdb"))) == 4 and not (folder / PRUNE_LOG).exists()
    done = prune_segments(folder, later, key, now=later)
    assert done.seq == 1
    assert sorted(p.name for p in folder.glob("audit.*.duckdb")) == [seg(folder, 4).name]
    report = verify_segments(folder, [key.public])
    assert report.ok, report.summary()
    assert report.segments[0]["first_seq"] == 16  # numbering carries on past the pruned records
    assert prune_segments(folder, later, key, now=later).dropped == []  # the newest segment always stays


def test_two_logs_sharing_the_old_default_origin_are_not_duplicates(folder: Path, key: SigningKey) -> None:
    """Logs made before origins were unique are all 'policyengine': two such logs differ in record 1."""
    for worker in (0, 1):
        with AuditLog(folder / f"audit.worker{worker}.duckdb", key, origin="policyengine", flush_interval=0) as log:
            log.append("decision", actor=f"w{worker}", payload={"worker": worker})
    report = verify_segments(folder, [key.public])
    assert report.ok, report.summary()
    shutil.copy(folder / "audit.worker1.duckdb", folder / "audit.worker1-copy.duckdb")
    failure = verify_segments(folder, [key.public]).failure
    assert failure is not None and failure.kind == "duplicated" and "audit.worker1" in failure.message, failure


def test_a_pruned_segment_still_present_is_checked_and_counted(folder: Path, key: SigningKey) -> None:
    """A prune stopped before deleting leaves the segment: it verifies, ends as recorded, and is noted."""
    saved = _pruned(folder, key)
    shutil.copy(saved / seg(folder, 1).name, seg(folder, 1))
    report = verify_segments(folder, [key.public])
    assert report.ok, report.summary()
    assert [s["file"] for s in report.segments] == [seg(folder, 1).name, seg(folder, 4).name]
    assert any("recorded as pruned but still present; it verifies" in note for note in report.notes), report.notes


def test_after_pruning_a_forged_or_broken_chain_still_fails(folder: Path, key: SigningKey, tmp_path: Path) -> None:
    later = datetime.now(UTC) + timedelta(days=400)
    prune_segments(folder, later - timedelta(days=1), key, now=later)  # drops 1..3
    con = duckdb.connect(str(folder / PRUNE_LOG))
    con.execute("UPDATE audit_log SET payload = json_merge_patch(payload, '{\"floor\": \"1970-01-01\"}')")
    con.close()
    report = verify_segments(folder, [key.public])
    assert report.failure is not None and Path(report.failure.segment).name == PRUNE_LOG
    assert report.failure.kind == "modified"


def test_prune_refuses_a_folder_that_does_not_verify(folder: Path, key: SigningKey) -> None:
    _modify_record(folder, key)
    later = datetime.now(UTC) + timedelta(days=400)
    with pytest.raises(AuditError, match=r"does not verify .*audit.000002.duckdb: seq 3: modified"):
        prune_segments(folder, later, key, now=later)
    assert len(list(folder.glob("audit.*.duckdb"))) == 4 and not (folder / PRUNE_LOG).exists()


def test_months_before_clamps_the_day() -> None:
    assert months_before(datetime(2026, 8, 31, tzinfo=UTC), 6) == datetime(2026, 2, 28, tzinfo=UTC)
    assert months_before(datetime(2026, 3, 15, tzinfo=UTC), 6) == datetime(2025, 9, 15, tzinfo=UTC)


# -- the decision server -----------------------------------------------------


def test_serve_roll_records_then_verify_dir(tmp_path: Path) -> None:
    seqs = []
    with Server(tmp_path, "--rules", str(RULES), "--roll-records", "5", "--no-access-log") as server:
        for i in range(23):
            answer = server.post("/v1/decide", ALLOW if i % 2 else DENY)
            assert answer.status_code == 200, answer.text
            seqs.append(int(answer.headers["x-audit-seq"]))
        server.wait_for_line(r"audit segment audit\.000002\.duckdb sealed")
        live = run(tmp_path, "query", "SELECT count(*) AS n FROM audit_log WHERE event = 'decision'", "--db",
                   str(tmp_path), "--format", "json")  # while the server holds its newest segment
        assert server.stop() == 0
    newest = sorted(tmp_path.glob("audit.*.duckdb"))[-1]
    assert live.returncode == 0, live.stderr
    assert f"note: {newest}: skipped, in use by a writer" in live.stderr
    con = duckdb.connect(str(newest), read_only=True)
    in_newest = con.execute("SELECT count(*) FROM audit_log WHERE event = 'decision'").fetchone()[0]
    con.close()
    assert json.loads(live.stdout)[0]["n"] + in_newest == 23  # the sealed segments, read while serving
    done = run(tmp_path, "audit", "verify", "--dir", str(tmp_path), "--pubkey", "audit.key.pub.pem", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    segments = report["segments"]
    assert len(segments) >= 5 and all(s["ok"] for s in segments)
    # every answered seq is a decision record of the segment whose range holds it
    found = 0
    for s in segments:
        con = duckdb.connect(str(tmp_path / s["file"]), read_only=True)
        decisions = {s["first_seq"] - 1 + r[0] for r in con.execute(
            "SELECT seq FROM audit_log WHERE event = 'decision'").fetchall()}
        con.close()
        found += len(decisions & set(seqs))
    assert found == 23
    query = run(tmp_path, "query", "SELECT count(*) AS n FROM audit_log WHERE event = 'decision'", "--db",
                str(tmp_path), "--format", "json")
    assert query.returncode == 0 and json.loads(query.stdout) == [{"n": 23}], query.stderr
    effects = run(tmp_path, "query", "SELECT count(*) AS n FROM audit_log WHERE event = 'decision' "
                  "AND payload->>'$.decision.effect' = 'deny'", "--db", str(tmp_path), "--format", "json")
    denials = run(tmp_path, "report", "denials", "--db", str(tmp_path), "--format", "json")
    assert denials.returncode == 0, denials.stderr
    assert len({(r["ts"], r["seq"]) for r in json.loads(denials.stdout)}) == json.loads(effects.stdout)[0]["n"] > 0


def test_serve_workers_roll_their_own_series(tmp_path: Path) -> None:
    generate_key(tmp_path / "k.key")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "policyengine", "serve", "--rules", str(RULES), "--key", "k.key",
                             "--db", "audit.duckdb", "--port", str(port), "--workers", "2", "--ledger-per-worker",
                             "--roll-records", "4",
                             "--no-access-log"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    answers = 0
    try:
        deadline = time.monotonic() + 60
        while answers < 30 and time.monotonic() < deadline:
            try:
                with httpx.Client(timeout=10) as client:  # a new connection each time: the kernel spreads them
                    if client.post(f"http://127.0.0.1:{port}/v1/decide", json=ALLOW).status_code == 200:
                        answers += 1
            except httpx.TransportError:
                time.sleep(0.1)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert answers == 30
    done = run(tmp_path, "audit", "verify", "--dir", str(tmp_path), "--pubkey", "k.key.pub.pem", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    series = {s["series"] for s in json.loads(done.stdout)["segments"]}
    assert series <= {"audit.worker0", "audit.worker1"} and series
    query = run(tmp_path, "query", "SELECT count(*) AS n FROM audit_log WHERE event = 'decision'", "--db",
                str(tmp_path), "--format", "json")
    assert query.returncode == 0 and json.loads(query.stdout) == [{"n": 30}], query.stderr


def test_verify_dir_passes_on_a_segments_note_that_its_last_facts_are_not_written_yet(tmp_path: Path,
                                                                                     key: SigningKey) -> None:
    """A server killed between answering and writing the reports' columns leaves the last facts of its open
    segment unwritten: no failure, and ``verify --dir`` says so as verifying that file alone does."""
    log = SegmentedLog(tmp_path, "s", key, roll=RollPolicy(records=50), flush_interval=0)
    for i in range(3):
        log.append("model_call", payload={"model": "m", "i": i})
        log.flush(answer_first=True)
    log._current().abandon()  # killed: nothing more is written (the facts left for later included)
    report = verify_segments(tmp_path, [key.public])
    assert report.ok, report.failures
    (segment,) = tmp_path.glob("s.*.duckdb")
    assert [n for n in report.notes if "audit_facts" in n] == [
        f"{segment}: the last 3 model_call record(s) have no audit_facts row yet (their writer "
        "stopped before writing them; reports read their payloads, and the next writer to open the log fills them in)"]
