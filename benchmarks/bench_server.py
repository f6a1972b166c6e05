"""Benchmark ``policyengine serve`` with wrk on loopback, beside the in-process engine.

Run by hand: ``python benchmarks/bench_server.py [--duration 10] [--workers 1]``
(needs ``wrk``: ``apt-get install -y wrk``). Starts the server on the shipped
rules with a fresh audit log in a temp folder, drives it at 1, 16 and 64
connections (single decisions, native and AuthZEN) and with batches of 1,000,
then prints a Markdown table. Every answer counted was audited (durable) first.

Beside each row: the server's CPU per request (all its threads and processes,
from /proc: less sensitive to other load on the machine than requests/s), the
group commits' mean size and time (from /metrics, one worker) and the load
average. ``--tree DIR`` runs the server from another checkout (A/B against main
in one sitting); ``--skip-in-process`` and ``--rows`` shorten a run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "rules"
REQUEST = {"principal": {"id": "alice", "roles": ["analyst"]}, "action": "read",
           "resource": {"kind": "dataset", "id": "erp/invoices/2026-0042"}}
AUTHZEN = {"subject": {"type": "user", "id": "alice", "properties": {"roles": ["analyst"]}},
           "action": {"name": "read"}, "resource": {"type": "dataset", "id": "erp/invoices/2026-0042"}}

SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb"); wrk.body = f:read("*a"); f:close()
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def _cpu_ticks(pids: list[int]) -> int:
    """User + system clock ticks of ``pids`` and their threads so far (0 for a process that is gone)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat
    return total


def _server_pids(root: int) -> list[int]:
    """The server process and its workers (children)."""
    pids = [root]
    try:
        children = Path(f"/proc/{root}/task/{root}/children").read_text().split()
    except OSError:
        children = []
    return pids + [int(child) for child in children]


def _commits(base: str) -> tuple[float, float, float]:
    """(commits, records, seconds) so far from /metrics (one worker's, with --workers N)."""
    import urllib.request

    try:
        text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    except OSError:
        return 0.0, 0.0, 0.0
    values = dict(re.findall(r"^(policyengine_audit_commit_\w+) ([\d.e+]+)$", text, re.M))
    return (float(values.get("policyengine_audit_commit_seconds_count", 0)),
            float(values.get("policyengine_audit_commit_records_sum", 0)),
            float(values.get("policyengine_audit_commit_seconds_sum", 0)))


def wrk(url: str, body: Path, connections: int, duration: int, folder: Path) -> dict[str, float]:
    script = folder / f"{body.stem}.lua"
    script.write_text(SCRIPT.replace("{body}", str(body)))
    threads = min(2, connections)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script),
                          url], capture_output=True, text=True, check=True).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
              "p50": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
              "p99": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))}  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non2xx"] = float(bad.group(1)) if bad else 0.0
    result["requests"] = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return result


def in_process(seconds: float = 2.0) -> dict[str, float]:
    """The engine alone, and the engine + audit append (+ one flush per 1,000) in one process."""
    from policyengine import load_policy
    from policyengine.audit import AuditLog, decision_event, generate_key

    policy = load_policy([str(RULES)])
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(1000):
            policy.evaluate(REQUEST)
        n += 1000
    engine = n / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        key = generate_key(Path(tmp) / "k.key")
        with AuditLog(Path(tmp) / "a.duckdb", key) as log:
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                for _ in range(1000):
                    decision = policy.evaluate(REQUEST)
                    log.append("decision", **decision_event(REQUEST, decision.to_dict()))
                log.flush()
                n += 1000
            audited = n / (time.perf_counter() - start)
    return {"engine": engine, "audited": audited}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--db-dir", help="folder for the audit log (default: a temp folder; /dev/shm shows the "
                                         "ceiling without disk fsync, which is not durable)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout to run the server from (default: this one)")
    parser.add_argument("--rows", default="decide,authzen,batch", help="which rows: decide, authzen, batch")
    parser.add_argument("--connections", default="1,16,64", help="connections for the single-request rows")
    parser.add_argument("--skip-in-process", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    if not args.skip_in_process:
        local = in_process()
        print(f"in-process: engine {local['engine']:,.0f} decisions/s; engine + audit append "
              f"(flush per 1,000) {local['audited']:,.0f}/s")
    wanted = set(args.rows.split(","))
    levels = [int(c) for c in args.connections.split(",")]
    tree = args.tree.resolve()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        subprocess.run([sys.executable, "-m", "policyengine", "keys", "generate", "--out", str(folder / "k.key")],
                       check=True, capture_output=True)
        bodies = {"decide": [REQUEST], "authzen": [AUTHZEN], "batch": [[REQUEST] * 1000]}
        paths = {}
        for name, (body,) in bodies.items():
            paths[name] = folder / f"{name}.json"
            paths[name].write_text(json.dumps(body))
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "policyengine", "serve", "--rules", str(tree / "rules"),
                                   "--db", str(Path(args.db_dir or folder) / f"bench-{port}.duckdb"),
                                   "--key", str(folder / "k.key"),
                                   "--port", str(port), "--workers", str(args.workers), "--no-access-log"],
                                  stderr=subprocess.PIPE, text=True, env=env, cwd=tempfile.gettempdir())
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
            time.sleep(1)
            rows = []
            ticks = os.sysconf("SC_CLK_TCK")

            def measure(route: str, name: str, connections: int, per_request: int) -> None:
                pids = _server_pids(server.pid)
                one = args.workers == 1  # with several, /metrics answers from whichever worker the kernel picks
                before, commits = _cpu_ticks(pids), (_commits(base) if one else (0.0, 0.0, 0.0))
                r = wrk(base + route, paths[name], connections, args.duration, folder)
                cpu = (_cpu_ticks(pids) - before) / ticks / max(r["requests"], 1) * 1e6
                after = _commits(base) if one else commits
                n = after[0] - commits[0]
                size = (after[1] - commits[1]) / n if n else 0.0
                ms = (after[2] - commits[2]) / n * 1000 if n else 0.0
                label = f"{route} ({'1,000' if per_request > 1 else '1'} per request)"
                rows.append((label, connections, r["rps"], r["rps"] * per_request, r["p50"], r["p99"], r["non2xx"],
                             cpu / per_request, size, ms, os.getloadavg()[0]))

            for route, name in (("/v1/decide", "decide"), ("/access/v1/evaluation", "authzen")):
                if name in wanted:
                    for connections in levels:
                        measure(route, name, connections, 1)
            if "batch" in wanted:
                for connections in (1, 4, 16):
                    measure("/v1/decide/batch", "batch", connections, 1000)
        finally:
            server.terminate()
            server.wait(60)
            if args.db_dir:
                for stale in Path(args.db_dir).glob(f"bench-{port}*"):
                    stale.unlink()
    print(f"\nserver from {tree}, workers: {args.workers}, {args.duration} s per row\n")
    print("| endpoint | connections | requests/s | audited decisions/s | p50 ms | p99 ms | non-2xx "
          "| server CPU us/decision | records/commit | ms/commit | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for route, connections, rps, dps, p50, p99, bad, cpu, size, ms, load in rows:
        print(f"| {route} | {connections} | {rps:,.0f} | {dps:,.0f} | {p50:.2f} | {p99:.2f} | {bad:.0f} "
              f"| {cpu:.0f} | {f'{size:.1f}' if size else '-'} | {f'{ms:.2f}' if ms else '-'} | {load:.1f} |")


if __name__ == "__main__":
    main()
