"""Gateway overhead: latency added over calling the upstream directly, beside LiteLLM proxy, in one run.

    python benchmarks/bench_gateway.py [--requests 1000] [--litellm PATH-TO-litellm] [--phases]

Starts the recording-free OpenAI-compatible upstream of the tests
(tests/openai_upstream.py), ``policyengine gateway`` in front of it (policy,
guards, budget reservation, rate limit and a durable signed audit record per
call) and, when a ``litellm`` executable is given or found, LiteLLM proxy in
front of the same upstream. One client sends the same chat completion
sequentially over a keep-alive connection, rounds interleaved (direct, ours,
LiteLLM) so drift hits all three alike; prints p50/p99 of each and of the added
latency (via - direct, percentile by percentile). ``--phases`` also times the
gateway's phases (key lookup, guards, decisions, budget, upstream call, audit
append and durable wait) inside its process.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from gateway_process import Process, start_gateway, start_upstream  # noqa: E402

POLICY = """\
package bench.gateway
role caller
model small
    provider "openai-compatible" region "eu-west-1" hosting internal
    cost 1 USD per 1M tokens latency 10 ms
rule callers_invoke
    allow role caller to invoke model "*"
budget bench_tokens
    for role caller
    limit 1_000_000_000 tokens per month
    on exceed deny
rule no_prompt_injection
    deny any to invoke model "*"
    when context.guard.prompt_injection >= 0.8
"""
KEY = "sk-bench"
LITELLM_KEY = "sk-" + hashlib.sha256(b"litellm bench master key").hexdigest()  # its proxy refuses to start without
BODY = {"model": "small", "messages": [{"role": "user", "content": "Classify this invoice exception: duplicate?"}],
        "max_tokens": 16}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def start_litellm(cwd: Path, executable: str, upstream: str) -> Process:
    port = free_port()
    config = {"model_list": [{"model_name": "small", "litellm_params": {
        "model": "openai/small-up", "api_base": upstream + "/v1", "api_key": "unused"}}],
        "litellm_settings": {"drop_params": True, "telemetry": False}}
    (cwd / "litellm.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
           "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": LITELLM_KEY}
    proc = subprocess.Popen([executable, "--config", str(cwd / "litellm.yaml"), "--host", "127.0.0.1",
                             "--port", str(port), "--num_workers", "1"], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health/liveliness", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("LiteLLM proxy did not start within 180 s")
    wrapper = Process.__new__(Process)
    wrapper.proc, wrapper.url, wrapper.lines = proc, url, []
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--litellm", default=shutil.which("litellm"))
    parser.add_argument("--phases", action="store_true",
                        help="time the gateway's phases per call (benchmarks/gateway_phases) and print them")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="clients at once (>1: each target in turn, N threads, requests split between them)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        (cwd / "bench.policy").write_text(POLICY, encoding="utf-8")
        keys = {"keys": [{"sha256": hashlib.sha256(KEY.encode()).hexdigest(), "principal": {"id": "bench",
                          "roles": ["caller"]}, "limits": {"requests_per_minute": 1_000_000}}]}
        (cwd / "keys.yaml").write_text(yaml.safe_dump(keys), encoding="utf-8")
        with start_upstream(cwd, lifetime=1800) as upstream:
            providers = {"models": {"small": {"base_url": upstream.url + "/v1", "model": "small-up", "retries": 0}}}
            (cwd / "providers.yaml").write_text(yaml.safe_dump(providers), encoding="utf-8")
            config = {"rules": ["bench.policy"], "keys": "keys.yaml", "providers": "providers.yaml",
                      "db": "bench.duckdb", "key": "bench.key", "guards": {"mask": ["email"]}}
            (cwd / "gateway.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
            targets = {"direct": (upstream.url, "direct")}
            if args.phases:  # the gateway process only: the upstream has started, the clients are this process
                os.environ["GW_PHASES"] = str(cwd / "phases.txt")
                os.environ["PYTHONPATH"] = os.pathsep.join(
                    p for p in (str(ROOT / "benchmarks" / "gateway_phases"), os.environ.get("PYTHONPATH")) if p)
            with start_gateway(cwd, cwd / "gateway.yaml", "--no-access-log") as gateway:
                targets["policyengine"] = (gateway.url, KEY)
                litellm = start_litellm(cwd, args.litellm, upstream.url) if args.litellm else None
                if litellm is not None:
                    targets["litellm"] = (litellm.url, LITELLM_KEY)
                try:
                    results = run(targets, args.requests, args.warmup) if args.concurrency == 1 else \
                        run_concurrent(targets, args.requests, args.warmup, args.concurrency)
                    metrics = httpx.get(gateway.url + "/metrics").text
                finally:
                    if litellm is not None:
                        litellm.stop()
            phases = (cwd / "phases.txt").read_text(encoding="utf-8") if args.phases else ""
    report(results, args.requests, args.concurrency)
    values = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
              if line.startswith("policyengine_audit_commit_seconds_")}
    count = values.get("policyengine_audit_commit_seconds_count", 0)
    if count:
        mean = values["policyengine_audit_commit_seconds_sum"] / count * 1000
        print(f"policyengine: {int(count)} audit commits, mean {mean:.2f} ms each "
              "(the durable wait before each answer)")
    if phases:
        print("policyengine, wall time per call by phase (first 200 calls left out):\n" + phases, end="")


def run(targets: dict[str, tuple[str, str]], requests: int, warmup: int) -> dict[str, list[float]]:
    clients = {name: httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=30)
               for name, (url, key) in targets.items()}
    times: dict[str, list[float]] = {name: [] for name in clients}
    for index in range(warmup + requests):
        for name, client in clients.items():
            started = time.perf_counter()
            answer = client.post("/v1/chat/completions", json=BODY)
            elapsed = time.perf_counter() - started
            if answer.status_code != 200:
                raise RuntimeError(f"{name}: HTTP {answer.status_code}: {answer.text[:300]}")
            if index >= warmup:
                times[name].append(elapsed * 1000)
    for client in clients.values():
        client.close()
    return times


def run_concurrent(targets: dict[str, tuple[str, str]], requests: int, warmup: int,
                   concurrency: int) -> dict[str, list[float]]:
    import threading

    times: dict[str, list[float]] = {}
    for name, (url, key) in targets.items():
        collected: list[float] = []
        lock = threading.Lock()

        def client_loop(count: int) -> None:
            with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=60) as client:
                for index in range(count):
                    started = time.perf_counter()
                    answer = client.post("/v1/chat/completions", json=BODY)
                    elapsed = (time.perf_counter() - started) * 1000
                    if answer.status_code != 200:
                        raise RuntimeError(f"{name}: HTTP {answer.status_code}: {answer.text[:300]}")
                    if index >= warmup // concurrency:
                        with lock:
                            collected.append(elapsed)

        threads = [threading.Thread(target=client_loop, args=((requests + warmup) // concurrency,))
                   for _ in range(concurrency)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(f"{name}: {(requests + warmup) / (time.perf_counter() - started):.0f} requests/s with {concurrency} clients")
        times[name] = collected
    return times


def report(times: dict[str, list[float]], requests: int, concurrency: int = 1) -> None:
    direct = times["direct"]
    if concurrency == 1:
        print(f"{requests} sequential chat completions per target, keep-alive, rounds interleaved")
    else:
        print(f"{requests} chat completions per target from {concurrency} concurrent keep-alive clients")
    print(f"{'target':<14} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'added p50':>10} {'added p99':>10}")
    for name, values in times.items():
        added50 = percentile(values, 50) - percentile(direct, 50)
        added99 = percentile(values, 99) - percentile(direct, 99)
        print(f"{name:<14} {percentile(values, 50):8.2f} {percentile(values, 99):8.2f} {statistics.mean(values):8.2f}"
              + ("" if name == "direct" else f" {added50:10.2f} {added99:10.2f}"))


if __name__ == "__main__":
    main()
