"""Decisions at scale: hits, misses and fresh ids at 100 to 100,000 rules, beside cedarpy and regorus.

Run by hand (not a test):

    pip install -e '.[bench]'
    python benchmarks/bench_scale.py [--sizes 100,1000,10000,100000] [--no-peers] [--jsonl 200000]
        [--only eval [--workload shipped_distinct]]

Every rule of the workload is about datasets, so all N rules share the
(action, kind) buckets the requests look in (the case where a scan of a bucket
hurts most). Rule i allows role ``staff_k`` or ``lead_k`` (``lead_k extends
staff_k``) to read or write ``projP/*`` (two rules per project, half with a
condition on the principal's department); one rule in ten denies ``projP/secret-*``
to anyone, and two rules whose first segment is a glob (``*/quarantine/**``,
``arch?/**``) sit at the root of the candidate index.

Three request streams, each timed per call on a freshly loaded policy:

* hits: 200 requests about existing projects, repeated (every lookup cached);
* misses: a request per project, each project asked about once (every lookup
  new: the first segment was never seen by the engine);
* fresh: ids whose first segment no rule names (``newJ/doc``), each once;
* misses_full: the misses again, with the candidate cache full (its limit
  lowered to 1,000 and filled first), so each miss also evicts an entry.

The same requests go to cedarpy (``is_authorized`` with pre-parsed policies and
entities) and to regorus (the Rust Rego interpreter; the PyPI name ``regorus``
has no release, so the ``gordon-to-regorus`` build of it, which installs the
``regorus`` module), with the rules written in their languages; the script
asserts the three agree on every request they all decided. Peers decide fewer
requests at large sizes (each call scans every rule).

Also measured: a budgeted decision (model invoke under two budgets, three
limits) with an in-memory and a DuckDB ledger holding 0 or 100,000 past charges
spread over 14 months; and ``policyengine eval`` over JSON Lines (lines/s, with
the start-up and load subtracted: a run of 1 line is timed too), for the hit
requests and for the shipped policy tests' requests against rules/, each
repeated and with every line distinct (``--only eval --workload NAME``).

Loading (``--only load``): each size loaded in a new process with an empty
cache folder (cold: parse, check, compile) and again in another (warm: from the
disk caches the first wrote), with the first full collection after it and the
process's peak RSS. ``PYTHONPATH`` chooses the policyengine timed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROLES = 10
DEPTS = 5


@dataclass(frozen=True)
class Rule:
    effect: str
    role: str | None  # None: any principal
    action: str
    pattern: str
    dept: str | None


def projects(n: int) -> int:
    return max(1, n // 2)


def workload(n: int) -> list[Rule]:
    rules = [Rule("deny", None, "write", "*/quarantine/**", None), Rule("deny", None, "read", "arch?/**", None)]
    for i in range(n - len(rules)):
        project = f"proj{(i // 2) % projects(n)}"
        if i % 10 == 9:
            rules.append(Rule("deny", None, "read" if i % 20 == 9 else "write", f"{project}/secret-*", None))
            continue
        role = f"{'lead' if i % 3 == 0 else 'staff'}_{i % ROLES}"
        rules.append(Rule("allow", role, "read" if i % 4 else "write", f"{project}/*",
                          f"d{i % DEPTS}" if i % 2 == 0 else None))
    return rules


def request(rng: random.Random, rid: str, rules: list[Rule] | None = None) -> dict:
    """A request about ``rid``; aimed at an allow rule for its project when ``rules`` lists them."""
    role = f"{rng.choice(['staff', 'lead'])}_{rng.randrange(ROLES)}"
    action, dept = rng.choice(["read", "read", "write"]), f"d{rng.randrange(DEPTS)}"
    if rules:
        aim = rng.choice(rules)
        role, action, dept = aim.role, aim.action, aim.dept or dept
    return {"principal": {"id": f"u_{role}_{dept}", "type": "user", "roles": [role], "attrs": {"dept": dept}},
            "action": action, "resource": {"kind": "dataset", "id": rid}}


def streams(n: int, rules: list[Rule], count: int, seed: int = 11) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    by_project: dict[str, list[Rule]] = {}
    for r in rules:
        if r.effect == "allow":
            by_project.setdefault(r.pattern.split("/")[0], []).append(r)

    def doc() -> str:
        return rng.choice(["doc", "doc", "doc", "secret-", "quarantine/x"]) + str(rng.randrange(50))

    hits = []
    for j in range(200):
        p = f"proj{rng.randrange(projects(n))}"
        hits.append(request(rng, f"{p}/{doc()}", by_project.get(p) if j % 3 else None))
    order = list(range(projects(n)))
    rng.shuffle(order)
    misses = [request(rng, f"proj{p}/{doc()}", by_project.get(f"proj{p}") if j % 3 else None)
              for j, p in enumerate(order[:count])]
    fresh = [request(rng, f"new{j}/{doc()}") for j in range(count)]
    return {"hits": hits, "misses": misses, "fresh": fresh}


# --- the same rules for the peers ---------------------------------------------------


def policyengine_text(rules: list[Rule]) -> str:
    lines = ["package bench", ""]
    for k in range(ROLES):
        lines += [f"role staff_{k}", f"role lead_{k} extends staff_{k}"]
    lines.append("")
    for i, r in enumerate(rules):
        who = f"role {r.role}" if r.role else "any"
        lines += [f"rule r{i}", f'    {r.effect} {who} to {r.action} dataset "{r.pattern}"']
        if r.dept:
            lines.append(f'    when principal.dept == "{r.dept}"')
    return "\n".join(lines) + "\n"


def cedar_id_test(pattern: str) -> str:
    """The workload's four id shapes in Cedar (its ``like`` lets ``*`` cross '/', so segments are attributes)."""
    if pattern == "*/quarantine/**":
        return 'resource.segs >= 3 && resource.rest like "quarantine/*"'
    if pattern == "arch?/**":
        return 'resource.head like "arch*" && resource.headlen == 5 && resource.segs >= 2'
    head, _, rest = pattern.partition("/")
    test = f'resource.head == "{head}" && resource.segs == 2'
    return test if rest == "*" else f'{test} && resource.rest like "{rest}"'


def cedar_text(rules: list[Rule]) -> str:
    out = []
    for r in rules:
        verb = "permit" if r.effect == "allow" else "forbid"
        who = f'principal in Role::"{r.role}"' if r.role else "principal"
        cond = [cedar_id_test(r.pattern)]
        if r.dept:
            cond.append(f'principal.dept == "{r.dept}"')
        out.append(f'{verb}({who}, action == Action::"{r.action}", resource is Dataset) '
                   f'when {{ {" && ".join(cond)} }};')
    return "\n".join(out)


def cedar_entities(reqs: list[dict]) -> list[dict]:
    ents: dict[tuple[str, str], dict] = {}
    for k in range(ROLES):
        ents[("Role", f"staff_{k}")] = {"uid": {"type": "Role", "id": f"staff_{k}"}, "attrs": {}, "parents": []}
        ents[("Role", f"lead_{k}")] = {"uid": {"type": "Role", "id": f"lead_{k}"}, "attrs": {},
                                       "parents": [{"type": "Role", "id": f"staff_{k}"}]}
    for q in reqs:
        p, rid = q["principal"], q["resource"]["id"]
        head = rid.split("/")[0]
        ents[("User", p["id"])] = {"uid": {"type": "User", "id": p["id"]}, "attrs": {"dept": p["attrs"]["dept"]},
                                   "parents": [{"type": "Role", "id": x} for x in p["roles"]]}
        ents[("Dataset", rid)] = {"uid": {"type": "Dataset", "id": rid},
                                  "attrs": {"head": head, "headlen": len(head), "rest": rid.partition("/")[2],
                                            "segs": rid.count("/") + 1}, "parents": []}
    return list(ents.values())


def cedar_request(q: dict) -> dict:
    return {"principal": f'User::"{q["principal"]["id"]}"', "action": f'Action::"{q["action"]}"',
            "resource": f'Dataset::"{q["resource"]["id"]}"', "context": {}}


def rego_text(rules: list[Rule]) -> str:
    """The rules as Rego (v1): one ``deny``/``allow`` body per rule; roles closed by ``lead_k -> staff_k``."""
    out = ["package bench", "import rego.v1", "", "default allow := false", "",
           "roles contains r if { some r in input.principal.roles }",
           'roles contains r if { some x in input.principal.roles; startswith(x, "lead_"); '
           'r := concat("", ["staff_", substring(x, 5, -1)]) }', "",
           "allow if { not deny; permit }", ""]
    for r in rules:
        body = [f'input.action == "{r.action}"', f'glob.match("{r.pattern}", ["/"], input.resource.id)']
        if r.role:
            body.insert(0, f'"{r.role}" in roles')
        if r.dept:
            body.append(f'input.principal.attrs.dept == "{r.dept}"')
        out.append(f'{"deny" if r.effect == "deny" else "permit"} if {{ {"; ".join(body)} }}')
    return "\n".join(out) + "\n"


# --- measuring -------------------------------------------------------------------------


def per_call(fn, items: list, repeat: int = 1) -> list[float]:
    """Wall time of each call in microseconds."""
    clock = time.perf_counter_ns
    out = []
    for _ in range(repeat):
        for item in items:
            t = clock()
            fn(item)
            out.append((clock() - t) / 1000)
    return out


def summary(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def run_size(n: int, workdir: Path, peers: bool, count: int) -> dict:
    from policyengine import engine, load_policy

    rules = workload(n)
    reqs = streams(n, rules, count)
    folder = workdir / f"pe{n}"
    folder.mkdir()
    (folder / "bench.policy").write_text(policyengine_text(rules))
    engine._CACHE.clear()
    t = time.perf_counter()
    load_policy(folder)
    row: dict = {"rules": n, "load_s": time.perf_counter() - t}
    answers: dict[str, list[bool]] = {}
    loaded = load_policy(folder)
    # Loading pauses the cyclic GC, so the first collections afterwards walk every object of the new
    # policy (seconds at 100k rules): paid once, here, not by whichever requests come first.
    t = time.perf_counter()
    gc.collect()
    row["first_gc_s"] = time.perf_counter() - t
    from policyengine import evaluate as evaluate_module

    limit = evaluate_module._CACHE_LIMIT
    for name, items in [*reqs.items(), ("misses_full", reqs["misses"])]:
        # misses_full: the same misses with the candidate cache already full (limit lowered to 1,000), so
        # every miss also evicts the oldest entry
        evaluate_module._CACHE_LIMIT = 1_000 if name == "misses_full" else limit
        policy = loaded.with_blocked(frozenset())  # a new evaluator: empty caches
        if name == "misses_full":
            for i in range(1_000):  # fill the cache with entries of actions no request uses
                policy.evaluate(dict(items[0], action=f"fill{i}"))
        repeat = 50 if name == "hits" else 1  # hits: after the first round every lookup is cached
        if name == "hits":
            per_call(policy.evaluate, items)
        cpu = time.thread_time()
        samples = per_call(policy.evaluate, items, repeat)
        row[f"{name}_cpu_mean_us"] = (time.thread_time() - cpu) / len(samples) * 1e6  # CPU time: what load hides
        row[f"{name}_median_us"], row[f"{name}_p99_us"] = summary(samples)
        answers[name] = [policy.evaluate(q).effect == "allow" for q in items]
        row[f"{name}_n"] = len(samples)
        row[f"{name}_allowed"] = sum(answers[name])
    evaluate_module._CACHE_LIMIT = limit
    answers.pop("misses_full")
    if peers:
        peer_rows(n, rules, reqs, answers, row)
    return row


def peer_rows(n: int, rules: list[Rule], reqs: dict[str, list[dict]], answers: dict[str, list[bool]],
              row: dict) -> None:
    import cedarpy

    try:
        import regorus
    except ImportError:
        regorus = None
    take = 200 if n <= 1_000 else 40 if n <= 10_000 else 5
    sample = {name: items[:take] for name, items in reqs.items()}
    every = [q for items in sample.values() for q in items]
    t = time.perf_counter()
    cedar_policies = cedarpy.PolicySet.from_str(cedar_text(rules))
    cedar_ents = cedarpy.Entities.from_json_str(json.dumps(cedar_entities(every)))
    row["cedar_load_s"] = time.perf_counter() - t

    def cedar(q: dict) -> bool:
        return cedarpy.is_authorized(cedar_request(q), cedar_policies, cedar_ents).decision == cedarpy.Decision.Allow

    rego = None
    if regorus is not None:
        t = time.perf_counter()
        rego = regorus.Engine()
        text = rego_text(rules)
        if hasattr(rego, "set_policy_length_config"):  # its default refuses a file over 1 MiB
            rego.set_policy_length_config(max_col=10_000, max_file_bytes=len(text) + 1, max_lines=len(rules) + 100)
        rego.add_policy("bench.rego", text)
        rego.eval_rule("data.bench.allow")  # first evaluation prepares the policy
        row["rego_load_s"] = time.perf_counter() - t

    def rego_allow(q: dict) -> bool:
        rego.set_input_json(json.dumps(q))
        return rego.eval_rule("data.bench.allow") is True

    for name, items in sample.items():
        mine = answers[name][:len(items)]
        theirs = [cedar(q) for q in items]
        assert mine == theirs, f"cedar disagrees on {name}: " + str(
            next(q for q, a, b in zip(items, mine, theirs) if a != b))
        row[f"cedar_{name}_median_us"], row[f"cedar_{name}_p99_us"] = summary(per_call(cedar, items))
        if rego is not None:
            theirs = [rego_allow(q) for q in items]
            assert mine == theirs, f"regorus disagrees on {name}: " + str(
                next(q for q, a, b in zip(items, mine, theirs) if a != b))
            row[f"rego_{name}_median_us"], row[f"rego_{name}_p99_us"] = summary(per_call(rego_allow, items))
    row["peers_agree_on"] = len(every)


# --- budgets and eval --------------------------------------------------------------------

BUDGETED = {"principal": {"id": "invoice_classifier", "type": "agent"}, "action": "invoke",
            "resource": {"kind": "model", "id": "classifier_small"},
            "context": {"tokens": 1000, "workflow": "invoice-exceptions"}}


def budgets(workdir: Path, history: int) -> list[dict]:
    from policyengine import InMemoryLedger, load_policy
    from policyengine.resources import data_path
    from policyengine.store.embedded_ledger import EmbeddedLedger

    now = datetime(2026, 3, 10, 9, 30, tzinfo=timezone.utc)
    rows = []
    for name in ("in-memory", "DuckDB file"):
        for past in (0, history):
            ledger = InMemoryLedger() if name == "in-memory" else EmbeddedLedger(workdir / f"l{past}.duckdb")
            policy = load_policy(data_path("rules"), ledger=ledger)
            scopes = policy.budget_scopes(BUDGETED)
            rng = random.Random(5)
            charges = [(scopes[i % len(scopes)], now - timedelta(minutes=rng.randrange(60 * 24 * 420)))
                       for i in range(past)]
            if name == "in-memory":
                for scope, at in charges:
                    ledger.charge(scope, "tokens", 1.0, at)
            else:  # from 64 threads: the group commit writes their charges together, not a commit each
                with ThreadPoolExecutor(64) as pool:
                    list(pool.map(lambda c: ledger.charge(c[0], "tokens", 1.0, c[1]), charges))
            effect = policy.evaluate(BUDGETED, now=now).effect
            med, p99 = summary(per_call(lambda r: policy.evaluate(r, now=now), [BUDGETED], 20_000))
            rows.append({"ledger": name, "history": past, "effect": effect, "median_us": med, "p99_us": p99})
            if name != "in-memory":
                ledger.close()
    return rows


SHIPPED = Path(__file__).resolve().parent.parent / "rules"
SHIPPED_NOW = "2026-03-10T09:00:00Z"  # the shipped policy tests' clock


def _shipped_requests() -> list[dict]:
    """The requests of the shipped policy tests (rules/**/*_test.yaml): allow, deny, escalate, malformed."""
    from policyengine.testing.cases import load_test_file

    return [json.loads(case.request_json) for path in sorted(SHIPPED.rglob("*_test.yaml"))
            for case in load_test_file(path).cases]


def _distinct(request: dict, i: int) -> dict:
    """The request with a trace id of its own in ``context`` (no rule reads it): every line differs."""
    return {**request, "context": {**(request.get("context") or {}), "trace": f"t{i}"}}


def eval_jsonl(workdir: Path, lines: int, only: str | None = None) -> list[dict]:
    """``policyengine eval`` over ``lines`` JSON Lines: each workload's requests repeated, and each line distinct.

    hits: the 200 hit requests of the 1,000-rule workload; shipped: the shipped
    policy tests' requests against rules/ (``--now`` their clock). A repeated
    line may be answered from memory (jsonl.py); a distinct one never is.
    """
    rules = workload(1_000)
    folder = workdir / "eval"
    folder.mkdir(exist_ok=True)
    (folder / "bench.policy").write_text(policyengine_text(rules))
    hits = streams(1_000, rules, 10)["hits"]
    shipped = _shipped_requests()
    cases = {"hits": (hits, [str(folder)]), "shipped": (shipped, [str(SHIPPED), "--now", SHIPPED_NOW])}
    rows = []
    for name, (requests, args) in cases.items():
        for shape in ("repeated", "distinct"):
            if only is not None and f"{name}_{shape}" != only:
                continue
            big, one = workdir / f"{name}_{shape}.jsonl", workdir / f"{name}_one.jsonl"
            pick = (lambda i: requests[i % len(requests)]) if shape == "repeated" else (
                lambda i: _distinct(requests[i % len(requests)], i))
            big.write_text("".join(json.dumps(pick(i)) + "\n" for i in range(lines)))
            one.write_text(json.dumps(requests[0]) + "\n")
            rows.append({"workload": f"{name}_{shape}", "distinct_requests": len(requests),
                         **_time_eval(args, one, big, lines)})
    return rows


def _time_eval(args: list[str], one: Path, big: Path, lines: int) -> dict:
    """Best of 3 whole-process runs of 1 line and of ``lines`` lines; lines/s with start-up subtracted."""
    exe = [sys.executable, "-m", "policyengine", "eval", "--rules", *args, "--input"]
    times, cpu = {}, {}
    for name, path in (("one", one), ("big", big)):
        for _ in range(3):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run([*exe, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # exit 1: malformed
            took = time.perf_counter() - t
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            times[name] = min(times.get(name, took), took)
            cpu[name] = min(cpu.get(name, used), used)
    return {"lines": lines, "total_s": times["big"], "startup_s": times["one"],
            "lines_per_s": (lines - 1) / (times["big"] - times["one"]),
            "lines_per_cpu_s": (lines - 1) / (cpu["big"] - cpu["one"])}


# One load in a new process: ``load_policy`` timed (wall and CPU), then the first full collection
# (loading pauses the cyclic GC, so the first collection after it walks the whole new policy), and
# the process's peak RSS. Uses whichever policyengine PYTHONPATH names, so main can be timed too.
_LOAD_ONE = """
import gc, json, resource, sys, time
from policyengine import load_policy
t, cpu = time.perf_counter(), time.process_time()
load_policy(sys.argv[1])
row = {"load_s": time.perf_counter() - t, "load_cpu_s": time.process_time() - cpu}
t = time.perf_counter()
gc.collect()
row["first_gc_s"] = time.perf_counter() - t
row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(row))
"""


def load_rows(workdir: Path, sizes: list[int]) -> list[dict]:
    """Load cold (empty cache folder) and then warm (the disk caches the cold load wrote), each in a new process."""
    rows = []
    for n in sizes:
        folder = workdir / f"load{n}"
        folder.mkdir()
        (folder / "bench.policy").write_text(policyengine_text(workload(n)))
        env = {**os.environ, "XDG_CACHE_HOME": str(workdir / f"cache{n}")}
        env.pop("POLICYENGINE_NO_CACHE", None)
        for state in ("cold", "warm"):
            done = subprocess.run([sys.executable, "-c", _LOAD_ONE, str(folder)], env=env, check=True,
                                  capture_output=True, text=True)
            rows.append({"rules": n, "load": state, **json.loads(done.stdout), "loadavg_1m": os.getloadavg()[0]})
    return rows


def machine() -> str:
    load = os.getloadavg()
    versions = []
    for name in ("cedarpy", "regorus", "gordon-to-regorus"):
        try:
            from importlib.metadata import version
            versions.append(f"{name} {version(name)}")
        except Exception:
            pass
    return (f"{os.cpu_count()}-core {platform.machine()}, Python {platform.python_version()}, "
            f"{', '.join(versions)}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000,100000")
    parser.add_argument("--count", type=int, default=5_000, help="miss and fresh requests per size")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--jsonl", type=int, default=200_000, help="lines for the eval run (0: skip)")
    parser.add_argument("--history", type=int, default=100_000, help="past charges in the budget ledgers")
    parser.add_argument("--only", choices=["decisions", "budgets", "eval", "load"], default=None)
    parser.add_argument("--workload", default=None, help="with --only eval: one of hits_repeated, hits_distinct, "
                                                          "shipped_repeated, shipped_distinct (default: all)")
    args = parser.parse_args()
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.only in (None, "decisions"):
            for n in (int(x) for x in args.sizes.split(",")):
                row = run_size(n, work, not args.no_peers, args.count)
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        if args.only in (None, "load"):
            for row in load_rows(work, [int(x) for x in args.sizes.split(",")]):
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        if args.only in (None, "budgets"):
            for row in budgets(work, args.history):
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        if args.only in (None, "eval") and args.jsonl:
            for row in eval_jsonl(work, args.jsonl, args.workload):
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    print(machine(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
