"""A monitor rule it could not evaluate is no sign of health.

A bias rule over calls it cannot compare (one group judged, none judged, no
outcome matching the rule's positive value, a group path no call has, an empty
window) has no reading: the monitor names it (`not evaluated: ...`) and
`--fail-on-breach` exits 1, as for a breach. Before, such a rule printed
`breach: no` (one group judged even read `disparate_impact 1`) and cron was told
all was well. Real audit files, the real command in a subprocess.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_cli_reporting import pe
from test_reports import write_audit_db

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)

POLICY = """\
package shop

role clerk
role model_risk
agent scorer_bot
    owner "shop@example.com"
    roles clerk

model scorer
    provider "local" region "eu-west-1" hosting internal

rule bots_call_models
    allow role clerk to invoke model "*"

bias approval_parity
    for model scorer
    metric disparate_impact of outcome == "approved" by subject.region
    threshold >= 0.8
    window 30 days
    min samples 5
    on breach escalate to role model_risk
"""


def calls(groups: dict[str, tuple[int, int]], *, outcome: str = "approved", key: str = "region",
          days_ago: int = 3) -> list[tuple]:
    """``groups``: region -> (calls, of which approved)."""
    rows = []
    for region, (n, approved) in groups.items():
        for i in range(n):
            payload = {"model": "scorer", "subject": {key: region},
                       "outcome": outcome if i < approved else "declined"}
            rows.append((NOW - timedelta(days=days_ago, minutes=i), "model_call", "scorer_bot", "shop", "r",
                         payload, "h"))
    return rows


CASES = [
    # (name, calls, exit code, what stderr says)
    ("healthy", calls({"EU": (10, 5), "US": (10, 5)}), 0, None),
    ("breach", calls({"EU": (10, 8), "US": (10, 2)}), 1, None),
    ("one group judged", calls({"EU": (10, 5), "US": (3, 0)}), 1, "1 group(s) judged"),
    ("no group judged", calls({"EU": (3, 3), "US": (3, 0)}), 1, "0 group(s) judged"),
    ("outcome spelled otherwise", calls({"EU": (10, 8), "US": (10, 2)}, outcome="Approved"), 1,
     "are a positive value of the rule written differently"),
    ("no outcome is the positive value", calls({"EU": (10, 8), "US": (10, 2)}, outcome="granted"), 1,
     "disparate_impact is undefined"),
    ("group path no call has", calls({"EU": (10, 8), "US": (10, 2)}, key="Region"), 1, "has a value at"),
    ("empty window", calls({"EU": (10, 8), "US": (10, 2)}, days_ago=40), 1, "no model_call decisions"),
    ("only null groups", calls({"": (10, 8)}), 1, "has a value at"),
    # US written two ways, each part under min samples: EU and APAC alone were judged, ratio 1 (US: 0 of 8)
    *[(f"group written as {ascii(other)}", calls({"EU": (10, 5), "APAC": (10, 5), "US": (4, 0), other: (4, 0)}), 1,
       "groups written differently are one name")
      for other in ("us", "US ", "\uff35\uff33", "U\u200bS")],
    # EU's 8 approvals of 10, half written "Approved ": EU read 4 of 10 as US does, ratio 1 (truly 0.5)
    ("positive outcome written otherwise", calls({"EU": (6, 4), "US": (10, 4)})
     + calls({"EU": (4, 4)}, outcome="Approved "), 1, "are a positive value of the rule written differently"),
    ("groups apart only by name", calls({"EU": (10, 5), "APAC": (10, 5), "US": (4, 0), "UK": (4, 0)}), 0, None),
]


@pytest.mark.parametrize(("name", "story", "code", "said"), CASES, ids=[c[0] for c in CASES])
def test_fail_on_breach_fails_on_a_rule_not_evaluated(tmp_path: Path, name: str, story: list, code: int,
                                                      said: str | None) -> None:
    db = write_audit_db(tmp_path / "audit.duckdb", story)
    rules = tmp_path / "shop.policy"
    rules.write_text(POLICY)
    r = pe("monitor", "--db", db, "--rules", rules, "--no-record", "--fail-on-breach", "--now", NOW.isoformat(),
           "--format", "csv")
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    unread = [line for line in r.stderr.splitlines() if line.startswith("not evaluated: ")]
    if said is None:
        assert unread == [], r.stderr
        assert r.stdout.splitlines()[1].split(",")[6] == ("True" if code else "False"), r.stdout
    else:
        assert len(unread) == 1 and unread[0].startswith("not evaluated: shop.approval_parity (scorer): "), r.stderr
        assert said in unread[0], unread
        row = r.stdout.splitlines()[1].split(",")
        assert row[4] == "" and row[6] == "False", r.stdout  # no value, and no breach claimed either


# --- an unread result closes nothing ---------------------------------------------------------------


def alert(reading: str) -> dict:
    """An alert payload as the monitor records it: ``breach``, ``healthy`` or ``unread`` (no value, an error)."""
    details = {"escalate_to_role": "model_risk", "window_start": "2026-10-25T12:00:00+00:00",
               "window_end": "2026-11-24T12:00:00+00:00"}
    value = {"breach": 0.5, "healthy": 0.9, "unread": None}[reading]
    if reading == "unread":
        details["error"] = "1 group(s) judged (min samples 5: EU n=10, US n=3): bias needs two groups to compare"
    return {"kind": "bias", "rule": "shop.approval_parity", "model": "scorer", "metric": "disparate_impact",
            "value": value, "threshold": ">= 0.8", "breach": reading == "breach", "action": "escalate",
            "details": details}


OPEN_CASES = [
    # (monitor results in order, runs of the open item or None when none is open)
    (["breach"], 1),
    (["breach", "unread"], 1),
    (["breach", "unread", "unread"], 1),
    (["breach", "healthy"], None),
    (["healthy", "breach", "unread", "breach"], 2),
    (["breach", "healthy", "unread"], None),
    (["unread"], None),
]


@pytest.mark.parametrize(("readings", "runs"), OPEN_CASES, ids=["-".join(c[0]) for c in OPEN_CASES])
def test_open_escalation_stays_open_through_unread_results(tmp_path: Path, readings: list[str],
                                                           runs: int | None) -> None:
    story = [(NOW + timedelta(hours=i), "alert", "monitor", None, None, alert(r), "h")
             for i, r in enumerate(readings)]
    db = write_audit_db(tmp_path / "audit.duckdb", story)
    r = pe("report", "open_escalations", "--db", db, "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    if runs is None:
        assert rows == [], rows
    else:
        assert [(row["rule"], row["runs"], row["latest_value"]) for row in rows] == \
            [("shop.approval_parity", runs, 0.5)], rows


# --- the evidence pack says which results were no reading -------------------------------------------


EVIDENCE_CASES = [
    # (monitor results, breaches, not evaluated)
    (["healthy"], 0, 0),
    (["breach"], 1, 0),
    (["unread"], 0, 1),
    (["breach", "unread", "healthy", "unread"], 1, 2),
]


@pytest.mark.parametrize(("readings", "breaches", "unread"), EVIDENCE_CASES,
                         ids=["-".join(c[0]) for c in EVIDENCE_CASES])
def test_evidence_counts_results_not_evaluated(tmp_path: Path, readings: list[str], breaches: int,
                                               unread: int) -> None:
    story = [(NOW + timedelta(hours=i), "alert", "monitor", None, None, alert(r), "h")
             for i, r in enumerate(readings)]
    db = write_audit_db(tmp_path / "audit.duckdb", story)
    r = pe("report", "evidence", "--db", db, "--format", "json", "--since", (NOW - timedelta(days=1)).isoformat(),
           "--until", (NOW + timedelta(days=1)).isoformat(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    pack = json.loads(r.stdout)
    assert (pack["summary"]["monitor_breaches"], pack["summary"].get("monitor_not_evaluated")) == (breaches, unread)
    rows = pack["sections"]["monitoring"]["rows"]
    assert [row.get("not_evaluated") is not None for row in rows] == [x == "unread" for x in readings], rows
    assert all("two groups" in row["not_evaluated"] for row in rows if row.get("not_evaluated")), rows
