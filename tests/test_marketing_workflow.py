"""End to end: the marketing-campaign workflow through the real CLI on its own database.

Each case is one customer in one campaign, written to a temp input file; the
model simulator is told to segment and select content correctly, so what the
tests check is what the policy let through: consent per channel at the time of
each send (withdrawal mid-campaign included), EEA data kept in EU regions at
every step, the launch approval above the size or spend threshold, and the
bias rule on the segmentation model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli_workflows import audit_rows, pe

SURE = "models:\n  segmenter: {accuracy: 1.0, confidence: 0.95}\n  content_selector: {accuracy: 1.0}\n"
ALL = {"email": True, "web": True, "paid": True}


def customer(cid: str, **over: object) -> dict:
    item = {"id": f"test/{cid}", "campaign": "test", "customer": cid, "country": "DE", "age_band": "35-44",
            "classification": "pii", "consent": dict(ALL), "consent_withdrawn_at": {}, "profiling_opt_out": False,
            "processing_region": "eu-west-1", "audience_size": 10_000, "spend_usd": 5_000,
            "launch_at": "2026-03-02T09:00:00Z", "follow_up_at": "2026-03-16T09:00:00Z", "true_segment": "loyal"}
    item.update(over)
    return item


def run(tmp_path: Path, items: list[dict]) -> dict[str, dict]:
    """Run the items; return each run (from `runs show --json`) by customer."""
    (tmp_path / "in.json").write_text(json.dumps(items))
    (tmp_path / "sure.yaml").write_text(SURE)
    pe("run", "marketing-campaign", "--input", "in.json", "--providers", "sure.yaml", cwd=tmp_path)
    listed = [json.loads(line) for line in pe("runs", "list", "--json", "--limit", "500",
                                              cwd=tmp_path).stdout.splitlines()]
    return {r["item_id"].split("/")[1]: json.loads(pe("runs", "show", r["run_id"], "--json", cwd=tmp_path).stdout)
            for r in listed}


def steps(run_: dict) -> dict[str, dict]:
    return {s["step"]: s for s in run_["steps"]}


# customer, changes to the item, run status, outcome, {step: status}
CASES = [
    ("C-ok", {}, "completed", "followed_up",
     {"profile": "done", "segment": "done", "launch": "done", "send": "done", "follow_up": "done"}),
    ("C-email-off", {"consent": {"email": False, "web": True, "paid": False}}, "completed", None,
     {"send": "done"}),
    ("C-none", {"consent": {"email": False, "web": False, "paid": False}}, "completed", "no_consented_channel",
     {"route_channel": "done", "launch": "skipped", "send": "skipped"}),
    ("C-withdrawn-before", {"consent_withdrawn_at": {"email": "2026-03-01T00:00:00Z"}}, "denied", "suppressed",
     {"send": "denied", "suppress_send": "done", "follow_up": "not reached"}),
    ("C-withdrawn-mid", {"consent_withdrawn_at": {c: "2026-03-09T00:00:00Z" for c in ALL}}, "denied", "suppressed",
     {"send": "done", "follow_up": "denied", "suppress_follow_up": "done"}),
    ("C-withdrawn-after", {"consent_withdrawn_at": {c: "2026-03-20T00:00:00Z" for c in ALL}}, "completed",
     "followed_up", {"send": "done", "follow_up": "done"}),
    ("C-bad-time", {"consent_withdrawn_at": {"email": "last tuesday"}}, "denied", "suppressed",
     {"send": "denied"}),
    ("C-eu-in-us", {"processing_region": "us-east-1"}, "denied", "denied", {"profile": "denied"}),
    ("C-us-in-us", {"country": "US", "processing_region": "us-east-1"}, "completed", "followed_up",
     {"send": "done"}),
    ("C-no-region", {"processing_region": None}, "denied", "denied", {"profile": "denied"}),
    ("C-opt-out", {"profiling_opt_out": True}, "denied", "denied", {"profile": "denied"}),
    ("C-not-a-fit", {"true_segment": "not_a_fit"}, "completed", "not_targeted",
     {"segment": "done", "select_content": "skipped", "send": "skipped"}),
    ("C-at-threshold", {"audience_size": 100_000, "spend_usd": 50_000}, "completed", "followed_up",
     {"launch": "done"}),
    ("C-large", {"audience_size": 100_001}, "waiting_approval", "escalated", {"launch": "waiting"}),
    ("C-costly", {"spend_usd": 50_000.5}, "waiting_approval", "escalated", {"launch": "waiting"}),
    ("C-web-only", {"consent": {"email": False, "web": True, "paid": False}}, "completed", "sent",
     {"send": "done", "feedback": "done", "follow_up": "skipped"}),
]


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    tmp = tmp_path_factory.mktemp("marketing")
    return tmp, run(tmp, [customer(cid, **over) for cid, over, *_ in CASES])


@pytest.mark.parametrize("cid, over, status, outcome, expected", CASES, ids=[c[0] for c in CASES])
def test_each_customer_gets_what_the_policy_allows(ran, cid, over, status, outcome, expected):
    run_ = ran[1][cid]
    assert run_["status"] == status and outcome in (None, run_["outcome"]), run_
    got = steps(run_)
    assert {k: got.get(k, {}).get("status", "not reached") for k in expected} == expected


def test_the_router_picks_a_consented_channel_and_follows_up_only_on_one(ran):
    got = steps(ran[1]["C-email-off"])
    assert got["send"]["output"]["channel"] == "web"  # a loyal customer's first choice (email) has no consent
    assert got["feedback"]["output"]["next_channel"] in ("web", None)  # engaged: web again; else none is left


# customer, engaged by the first send (the simulator's results), the follow-up's offer and channel (None: none)
FEEDBACK = [
    ("C-ok", False, "reminder", "web"),  # not engaged: a reminder on the next consented channel
    ("C-us-in-us", False, "reminder", "web"),
    ("C-withdrawn-after", True, "upsell", "email"),  # engaged: an upsell on the same channel
    ("C-email-off", True, "upsell", "web"),
    ("C-web-only", False, None, None),  # not engaged and no other consented channel: no follow-up
]


@pytest.mark.parametrize("cid, engaged, offer, channel", FEEDBACK, ids=[f[0] for f in FEEDBACK])
def test_the_feedback_loop_retargets_the_follow_up_from_the_results_of_the_send(ran, cid, engaged, offer, channel):
    got = steps(ran[1][cid])
    assert got["feedback"]["output"] == {"engaged": engaged, "next_channel": channel, "offer": offer}
    if channel is None:
        assert got["follow_up"]["status"] == "skipped"
    else:
        follow = got["follow_up"]["output"]
        assert got["follow_up"]["status"] == "done" and (follow["sent"], follow["channel"]) == (offer, channel)


def test_a_withdrawal_mid_campaign_is_named_in_the_follow_up_denial(ran):
    follow = steps(ran[1]["C-withdrawn-mid"])["follow_up"]
    assert "marketing.campaigns.no_send_without_consent" in follow["reason"]


def test_eea_data_in_a_us_region_reaches_no_model_and_no_channel(ran):
    tmp, runs = ran
    run_id = runs["C-eu-in-us"]["run_id"]
    assert "eea_customer_data" in steps(runs["C-eu-in-us"])["profile"]["reason"]
    assert not [c for c in audit_rows(tmp / "policyengine.duckdb", "model_call") if c["run_id"] == run_id]
    assert not [t for t in audit_rows(tmp / "policyengine.duckdb", "tool_call") if t["run_id"] == run_id]


def test_every_step_of_a_run_names_its_compute_region(ran):
    tmp, runs = ran
    run_id = runs["C-ok"]["run_id"]
    decisions = [d for d in audit_rows(tmp / "policyengine.duckdb", "decision") if d["run_id"] == run_id]
    assert {d["step"] for d in decisions} >= {"profile", "segment", "select_content", "route_channel", "launch",
                                              "send", "feedback", "follow_up"}
    assert {d["request"]["context"]["region"] for d in decisions} == {"eu-west-1"}


def test_a_large_campaign_launches_once_a_marketing_lead_approves(ran):
    tmp, runs = ran
    run_id = runs["C-large"]["run_id"]
    refused = pe("approve", run_id, "--as", "operator", cwd=tmp, ok=False)  # started the run: four-eyes
    assert refused.returncode == 1
    assert pe("approve", run_id, "--as", "erin", cwd=tmp, ok=False).returncode == 1  # fraud analyst: wrong role
    assert "run completed, outcome followed_up" in pe("approve", run_id, "--as", "lena", cwd=tmp).stdout
    (approval,) = [a for a in audit_rows(tmp / "policyengine.duckdb", "approval") if a["run_id"] == run_id]
    assert approval["gate"] == "marketing.personalization.large_campaign_launch"
    assert (approval["approver"], approval["outcome"]) == ("lena", "approved")


def test_a_rejected_launch_sends_nothing(ran):
    tmp, runs = ran
    run_id = runs["C-costly"]["run_id"]
    assert "run rejected" in pe("reject", run_id, "--as", "lena", cwd=tmp).stdout
    shown = json.loads(pe("runs", "show", run_id, "--json", cwd=tmp).stdout)
    assert steps(shown).get("send", {}).get("status") in (None, "skipped")
    assert not [t for t in audit_rows(tmp / "policyengine.duckdb", "tool_call")
                if t["run_id"] == run_id and t["tool"].startswith("messaging/")]


@pytest.mark.slow
def test_the_shipped_sample_segmentation_is_watched_by_the_bias_rule(tmp_path):
    out = pe("run", "marketing-campaign", cwd=tmp_path).stdout
    assert "marketing-campaign" in out and "followed_up" in out and "suppressed" in out
    pe("monitor", cwd=tmp_path)
    (alert,) = [a for a in audit_rows(tmp_path / "policyengine.duckdb", "alert")
                if a.get("rule") == "marketing.personalization.segment_targeting_parity"]
    assert alert["model"] == "segmenter" and alert["metric"] == "demographic_parity"
    assert isinstance(alert["value"], float) and alert["breach"] is False
