"""Decision latency: policyengine vs cedarpy vs pycasbin on one RBAC+ABAC workload.

Run by hand (not a test):  python benchmarks/bench_decisions.py [--sizes 100,1000,10000]

For each size N the same policy is written three ways (policyengine rules,
Cedar policies, a Casbin model + policy CSV):

* 100 "active" rules about datasets (the kind every request asks about):
  allows by role, some with an ABAC condition on the principal's department,
  and denies on "secret" ids; roles come in pairs ``lead_k extends staff_k``;
* N - 100 "inactive" rules about tools, models, agents and workflows, which
  the requests never touch (as in a real policy set, most rules are for other
  resources).

The same requests go to all three engines and the script asserts that they
agree on every one. Timings are per call of each engine's in-process API with
a full answer: ``Policy.evaluate`` returning a ``Decision``; cedarpy's
``is_authorized`` with pre-parsed ``PolicySet`` and ``Entities`` handles (its
fastest documented use); casbin's ``Enforcer.enforce``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROLES = 10
GC_OFF = False
SCHEMAS = False  # --schemas: declare the attribute the requests carry (validated, normalised)
DEPTS = 5
ACTIVE = 100
INACTIVE_KINDS = (("tool", "run", "Tool"), ("model", "invoke", "Model"), ("agent", "call", "Agent"),
                  ("workflow", "trigger", "Workflow"))


@dataclass(frozen=True)
class Rule:
    effect: str  # allow | deny
    role: str | None  # None = any principal
    action: str
    kind: str
    pattern: str
    dept: str | None


def workload(n: int, seed: int = 7) -> list[Rule]:
    rng = random.Random(seed)
    rules: list[Rule] = []
    for i in range(ACTIVE):
        if i % 10 == 9:
            rules.append(Rule("deny", None, "write" if i % 20 == 9 else "read", "dataset", f"proj{i % 25}/secret-*",
                              None))
            continue
        role = f"{'lead' if i % 3 == 0 else 'staff'}_{i % ROLES}"
        dept = f"d{i % DEPTS}" if i % 2 == 0 else None
        rules.append(Rule("allow", role, "read" if i % 4 else "write", "dataset", f"proj{i % 25}/*", dept))
    for i in range(n - ACTIVE):
        kind, action, _ = INACTIVE_KINDS[i % len(INACTIVE_KINDS)]
        role = f"staff_{rng.randrange(ROLES)}"
        rules.append(Rule("allow", role, action, kind, f"{kind}{i}/*", f"d{i % DEPTS}" if i % 2 else None))
    return rules


def requests(count: int, seed: int = 11) -> list[dict]:
    """Two thirds aimed at an active allow rule (most then allowed), the rest random."""
    rng = random.Random(seed)
    allows = [r for r in workload(ACTIVE) if r.effect == "allow"]
    out = []
    for j in range(count):
        rid = f"proj{rng.randrange(25)}/{rng.choice(['doc', 'doc', 'secret-'])}{rng.randrange(50)}"
        role = f"{rng.choice(['staff', 'lead'])}_{rng.randrange(ROLES)}"
        action, dept = rng.choice(["read", "read", "write"]), f"d{rng.randrange(DEPTS)}"
        if j % 3:
            aim = rng.choice(allows)
            role = aim.role if aim.role.startswith("lead") else rng.choice([aim.role, aim.role.replace("staff", "lead")])
            rid = aim.pattern.replace("*", rid.split("/")[1])
            action, dept = aim.action, aim.dept or dept
        out.append({
            "principal": {"id": f"u{j}_{role}", "type": "user", "roles": [role], "attrs": {"dept": dept}},
            "action": action,
            "resource": {"kind": "dataset", "id": rid},
        })
    return out


# --- policyengine ---------------------------------------------------------------------


def policyengine_text(rules: list[Rule]) -> str:
    lines = ["package bench", ""]
    for k in range(ROLES):
        lines += [f"role staff_{k}", f"role lead_{k} extends staff_{k}"]
    lines.append("")
    if SCHEMAS:
        depts = ", ".join(f'"d{k}"' for k in range(DEPTS))
        lines += ["schema requests",
                  f"    attribute principal.attrs.dept enum [{depts}] required normalise nfkc, trim, casefold", ""]
    for i, r in enumerate(rules):
        who = f"role {r.role}" if r.role else "any"
        lines.append(f"rule r{i}")
        lines.append(f'    {r.effect} {who} to {r.action} {r.kind} "{r.pattern}"')
        if r.dept:
            lines.append(f'    when principal.dept == "{r.dept}"')
    return "\n".join(lines) + "\n"


# --- cedar ------------------------------------------------------------------------------


def cedar_text(rules: list[Rule]) -> str:
    types = {"dataset": "Dataset", **{k: t for k, _, t in INACTIVE_KINDS}}
    out = []
    for r in rules:
        verb = "permit" if r.effect == "allow" else "forbid"
        who = f'principal in Role::"{r.role}"' if r.role else "principal"
        cond = [f'resource.path like "{r.pattern}"']
        if r.dept:
            cond.append(f'principal.dept == "{r.dept}"')
        out.append(f'{verb}({who}, action == Action::"{r.action}", resource is {types[r.kind]}) '
                   f'when {{ {" && ".join(cond)} }};')
    return "\n".join(out)


def cedar_entities(reqs: list[dict]) -> list[dict]:
    ents: dict[tuple[str, str], dict] = {}
    for k in range(ROLES):
        ents[("Role", f"staff_{k}")] = {"uid": {"type": "Role", "id": f"staff_{k}"}, "attrs": {}, "parents": []}
        ents[("Role", f"lead_{k}")] = {"uid": {"type": "Role", "id": f"lead_{k}"}, "attrs": {},
                                       "parents": [{"type": "Role", "id": f"staff_{k}"}]}
    for q in reqs:
        p, r = q["principal"], q["resource"]
        ents[("User", p["id"])] = {"uid": {"type": "User", "id": p["id"]}, "attrs": {"dept": p["attrs"]["dept"]},
                                   "parents": [{"type": "Role", "id": x} for x in p["roles"]]}
        ents[("Dataset", r["id"])] = {"uid": {"type": "Dataset", "id": r["id"]}, "attrs": {"path": r["id"]},
                                      "parents": []}
    return list(ents.values())


def cedar_request(q: dict) -> dict:
    return {"principal": f'User::"{q["principal"]["id"]}"', "action": f'Action::"{q["action"]}"',
            "resource": f'Dataset::"{q["resource"]["id"]}"', "context": {}}


# --- casbin -------------------------------------------------------------------------------

CASBIN_MODEL = """
[request_definition]
r = sub, obj, act, dept

[policy_definition]
p = sub, obj, act, dept, eft

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = (p.sub == "*" || g(r.sub, p.sub)) && r.act == p.act && globMatch(r.obj, p.obj) && (p.dept == "*" || r.dept == p.dept)
"""


def casbin_files(rules: list[Rule], reqs: list[dict], folder: Path) -> tuple[Path, Path]:
    rows = []
    for r in rules:
        rows.append(f"p, {r.role or '*'}, {r.kind}:{r.pattern}, {r.action}, {r.dept or '*'}, {r.effect}")
    for k in range(ROLES):
        rows.append(f"g, lead_{k}, staff_{k}")
    for p in {q["principal"]["id"]: q["principal"] for q in reqs}.values():
        rows += [f"g, {p['id']}, {role}" for role in p["roles"]]
    model, policy = folder / "model.conf", folder / "policy.csv"
    model.write_text(CASBIN_MODEL)
    policy.write_text("\n".join(rows) + "\n")
    return model, policy


# --- measuring ------------------------------------------------------------------------------


def timings(fn, items: list, repeat: int) -> list[float]:
    """Per-call wall times in microseconds (each call timed alone; GC on unless GC_OFF)."""
    out = []
    clock = time.perf_counter_ns
    if GC_OFF:
        gc.disable()
    try:
        for _ in range(repeat):
            for item in items:
                t = clock()
                fn(item)
                out.append((clock() - t) / 1000)
    finally:
        gc.enable()
    return out


def summary(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def run_size(n: int, workdir: Path, peers: bool) -> dict:
    if peers:
        import cedarpy  # noqa: F401  (bench extra)

    from policyengine import engine, load_policy

    rules = workload(n)
    reqs = requests(400 if n <= 1000 else 200)
    row: dict = {"rules": n, "requests": len(reqs)}

    folder = workdir / f"pe{n}"
    folder.mkdir()
    (folder / "bench.policy").write_text(policyengine_text(rules))
    os.environ["POLICYENGINE_NO_CACHE"] = "1"
    engine._CACHE.clear()
    t = time.perf_counter()
    policy = load_policy(folder)
    row["pe_load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    load_policy(folder)
    row["pe_reload_s"] = time.perf_counter() - t
    os.environ.pop("POLICYENGINE_NO_CACHE")
    engine._CACHE.clear()
    load_policy(folder)  # fills the parser's on-disk cache
    engine._CACHE.clear()  # as in a new process: parse from the disk cache, check and compile again
    t = time.perf_counter()
    load_policy(folder)
    row["pe_reload_fresh_s"] = time.perf_counter() - t

    pe_answers = [policy.evaluate(q).effect == "allow" for q in reqs]
    row["allowed"] = sum(pe_answers)
    samples = timings(policy.evaluate, reqs, repeat=max(1, 60_000 // len(reqs)))
    row["pe_median_us"], row["pe_p99_us"] = summary(samples)
    if not peers:
        return row

    import casbin
    import cedarpy

    t = time.perf_counter()
    cedar_policies = cedarpy.PolicySet.from_str(cedar_text(rules))
    cedar_ents = cedarpy.Entities.from_json_str(json.dumps(cedar_entities(reqs)))
    row["cedar_load_s"] = time.perf_counter() - t
    cedar_reqs = [cedar_request(q) for q in reqs]

    def cedar(q: dict) -> bool:
        return cedarpy.is_authorized(q, cedar_policies, cedar_ents).decision == cedarpy.Decision.Allow

    cedar_answers = [cedar(q) for q in cedar_reqs]
    model, policy_csv = casbin_files(rules, reqs, folder)
    t = time.perf_counter()
    enforcer = casbin.Enforcer(str(model), str(policy_csv))
    row["casbin_load_s"] = time.perf_counter() - t
    casbin_reqs = [(q["principal"]["id"], f"dataset:{q['resource']['id']}", q["action"],
                    q["principal"]["attrs"]["dept"]) for q in reqs]
    casbin_answers = [enforcer.enforce(*q) for q in casbin_reqs]
    for i, (a, b, c) in enumerate(zip(pe_answers, cedar_answers, casbin_answers, strict=True)):
        assert a == b == c, f"engines disagree on request {i}: {reqs[i]} policyengine={a} cedar={b} casbin={c}"
    row["agree"] = len(reqs)

    peer_items = 200 if n <= 1000 else 40
    row["cedar_median_us"], row["cedar_p99_us"] = summary(timings(cedar, cedar_reqs[:peer_items], repeat=3 if n <= 1000 else 1))
    row["casbin_median_us"], row["casbin_p99_us"] = summary(
        timings(lambda q: enforcer.enforce(*q), casbin_reqs[:peer_items], repeat=3 if n <= 1000 else 1))
    return row


SCENARIOS = {
    "allow, no obligations": {"principal": {"id": "alice", "roles": ["analyst"]}, "action": "read",
                              "resource": {"kind": "dataset", "id": "erp/invoices/1"}},
    "escalate (gate obligation)": {"principal": {"id": "alice", "roles": ["analyst"]}, "action": "approve_payment",
                                   "resource": {"kind": "tool", "id": "erp/payments"},
                                   "context": {"amount": 20_000, "currency": "EUR"}},
    "routed invoke (2 candidates)": {"principal": {"id": "fraud_screener", "type": "agent"}, "action": "invoke",
                                     "resource": {"kind": "model"}, "context": {"task": "fraud_score", "tokens": 500}},
    "model invoke under 2 budgets": {"principal": {"id": "invoice_classifier", "type": "agent"}, "action": "invoke",
                                     "resource": {"kind": "model", "id": "classifier_small"},
                                     "context": {"tokens": 1000, "workflow": "invoice-exceptions"}},
    "malformed request": {"principal": {"id": 7}, "action": "read"},
}


def scenarios(workdir: Path) -> str:
    """Per-decision latency on the example rules/ (36 rules, 9 gates, 6 budgets) by kind of decision."""
    from datetime import datetime, timezone

    from policyengine import DuckDBLedger, InMemoryLedger, load_policy
    from policyengine.resources import data_path

    now = datetime(2026, 3, 10, 9, tzinfo=timezone.utc)
    out = ["| decision on rules/ | ledger | median / p99 (µs) |", "|---|---|---|"]
    for ledger_name, ledger in (("in-memory", InMemoryLedger()), ("DuckDB file", DuckDBLedger(workdir / "l.duckdb"))):
        policy = load_policy(data_path("rules"), ledger=ledger)
        ledger.charge("workflow:invoice-exceptions", "tokens", 1_000, now)
        for name, request in SCENARIOS.items():
            if ledger_name != "in-memory" and "budget" not in name:
                continue
            effect = policy.evaluate(request, now=now).effect
            med, p99 = summary(timings(lambda r: policy.evaluate(r, now=now), [request], repeat=20_000))
            out.append(f"| {name} ({effect}) | {ledger_name} | {med:.2f} / {p99:.2f} |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--no-peers", action="store_true", help="only time policyengine")
    parser.add_argument("--gc-off", action="store_true", help="pause the garbage collector while timing")
    parser.add_argument("--scenarios", action="store_true", help="time kinds of decisions on rules/ instead")
    parser.add_argument("--schemas", action="store_true",
                        help="declare principal.dept in a schema (enum, required, normalised): validation on")
    args = parser.parse_args()
    global GC_OFF, SCHEMAS
    GC_OFF = args.gc_off
    SCHEMAS = args.schemas
    rows = []
    if args.scenarios:
        with tempfile.TemporaryDirectory() as tmp:
            print(scenarios(Path(tmp)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            row = run_size(n, Path(tmp), peers=not args.no_peers)
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    print()
    print(table(rows))
    return 0


def table(rows: list[dict]) -> str:
    head = ("| rules | policyengine load+check+compile: cold / unchanged, new engine / unchanged, same process (s) "
            "| policyengine median / p99 (µs) "
            "| cedarpy median / p99 (µs) | pycasbin median / p99 (µs) | speed-up vs cedarpy / pycasbin (median) |")
    out = [head, "|" + "---|" * 6]
    for r in rows:
        pe = f"{r['pe_median_us']:.2f} / {r['pe_p99_us']:.2f}"
        if "cedar_median_us" in r:
            cedar = f"{r['cedar_median_us']:.1f} / {r['cedar_p99_us']:.1f}"
            cas = f"{r['casbin_median_us']:.1f} / {r['casbin_p99_us']:.1f}"
            speed = f"{r['cedar_median_us'] / r['pe_median_us']:.0f}x / {r['casbin_median_us'] / r['pe_median_us']:.0f}x"
        else:
            cedar = cas = speed = "-"
        load = f"{r['pe_load_s']:.2f} / {r['pe_reload_fresh_s']:.2f} / {r['pe_reload_s']:.4f}"
        out.append(f"| {r['rules']:,} | {load} | {pe} | {cedar} | {cas} | {speed} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
