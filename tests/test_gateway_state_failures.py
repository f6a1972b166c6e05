"""The gateway when its shared state fails while an upstream call is in flight: PostgreSQL (the budget ledger)
restarted or unreachable, Redis (the rate limits) killed. The call happened, so it is charged (or its hold stays
until expiry charges it) and it has its ``model_call`` record; further calls cannot push spend past the limit."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from gateway_process import Process, received, start_gateway, start_upstream
from server_process import audit_records
from services import running_redis

from policyengine.budgets import window_bounds
from policyengine.store.postgres import PostgresLedger, connect_pool

POLICY = """\
package gw.state
role caller
model slow
    provider "local" region "eu-west-1" hosting internal
    cost 1 USD per 1M tokens latency 10 ms
model small
    provider "local" region "eu-west-1" hosting internal
    cost 1 USD per 1M tokens latency 10 ms
rule callers_invoke
    allow role caller to invoke model "*"
budget shared
    for role caller
    limit 300 tokens per month
    on exceed deny
"""
KEY = "sk-state-1"
SCOPE = "role:caller"


def write_config(cwd: Path, upstream: str, **extra: Any) -> Path:
    (cwd / "gw.policy").write_text(POLICY, encoding="utf-8")
    key = {"sha256": hashlib.sha256(KEY.encode()).hexdigest(), "name": "state",
           "principal": {"id": "bob", "roles": ["caller"]}, "limits": {"tokens_per_minute": 100_000}}
    (cwd / "keys.yaml").write_text(yaml.safe_dump({"keys": [key]}), encoding="utf-8")
    models = {name: {"base_url": upstream + "/v1", "model": name, "timeout_s": 30, "retries": 0}
              for name in ("slow", "small")}
    (cwd / "providers.yaml").write_text(yaml.safe_dump({"models": models}), encoding="utf-8")
    config = {"rules": ["gw.policy"], "keys": "keys.yaml", "providers": "providers.yaml", "db": "gw.duckdb",
              "key": "gw.key", **extra}
    path = cwd / "gateway.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def chat(gateway: Process, model: str) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100},
                      timeout=60)


def during_slow_call(gateway: Process, record: Path, break_state: Any) -> httpx.Response:
    """Call ``slow``; once the upstream has received it (and sleeps 3 s), ``break_state()``; the answer."""
    answers: list[httpx.Response] = []
    before = len(received(record))
    caller = threading.Thread(target=lambda: answers.append(chat(gateway, "slow")))
    caller.start()
    while len(received(record)) == before and caller.is_alive():
        threading.Event().wait(0.02)
    break_state()
    caller.join()
    return answers[0]


def model_calls(cwd: Path) -> list[dict[str, Any]]:
    return [p for event, p in audit_records(cwd / "gw.duckdb").values() if event == "model_call"]


def terminate_sessions(server: str, database: str) -> None:
    """End every session on ``database`` server-side: the gateway's pooled connections die as in a restart."""
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))


def spent_and_held(url: str) -> tuple[float, float]:
    pool = connect_pool(url, size=1)
    try:
        ledger = PostgresLedger(pool)
        return (ledger.usage(SCOPE, "tokens", *window_bounds("month", datetime.now(UTC))),
                ledger.reserved(SCOPE, "tokens"))
    finally:
        pool.close()


@pytest.mark.slow
def test_a_postgresql_restart_during_a_call_still_charges_and_records_it(tmp_path: Path, postgres_server: str,
                                                                        postgres_url: str) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    with start_upstream(tmp_path, tmp_path / "upstream.jsonl") as upstream:
        config = write_config(tmp_path, upstream.url, ledger=postgres_url)
        with start_gateway(tmp_path, config) as gateway:
            answer = during_slow_call(gateway, tmp_path / "upstream.jsonl",
                                      lambda: terminate_sessions(postgres_server, database))
            assert answer.status_code == 200, answer.text
            spent, held = spent_and_held(postgres_url)
            tokens = answer.json()["usage"]["total_tokens"]
            assert (spent, held) == (tokens, 0)  # settled on a fresh connection
            outcomes = [chat(gateway, "small").status_code for _ in range(3)]
    assert outcomes[0] == 200 and outcomes[-1] == 429  # the first call's charge counts against the 300
    assert spent_and_held(postgres_url)[0] <= 300
    first = model_calls(tmp_path)[0]
    assert (first["model"], first["status"], first["tokens"]) == ("slow", "ok", tokens)
    assert "charge_error" not in first


@pytest.mark.slow
def test_a_settle_that_cannot_reach_postgresql_keeps_the_hold_and_records_the_call(
        tmp_path: Path, postgres_server: str, postgres_url: str) -> None:
    database = postgres_url.rsplit("/", 1)[1]

    def unreachable() -> None:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        terminate_sessions(postgres_server, database)

    try:
        with start_upstream(tmp_path, tmp_path / "upstream.jsonl") as upstream:
            config = write_config(tmp_path, upstream.url, ledger=postgres_url)
            with start_gateway(tmp_path, config) as gateway:
                answer = during_slow_call(gateway, tmp_path / "upstream.jsonl", unreachable)
                # the answer's decision reads budgets it cannot reach, so it is withheld (fail closed); the call
                # happened, so it is recorded and its hold stays in the ledger
                assert (answer.status_code, answer.json()["error"]["code"]) == (403, "response_blocked")
                with psycopg.connect(postgres_server, autocommit=True) as conn:
                    conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
                estimate = 102  # "hi" (1 token) + max_tokens 100, + 1
                assert spent_and_held(postgres_url) == (0, estimate)
                outcomes = [chat(gateway, "small").status_code for _ in range(3)]
        assert outcomes[0] == 200 and outcomes[-1] == 429  # the held estimate still counts against the limit
        first = model_calls(tmp_path)[0]
        assert (first["model"], first["status"]) == ("slow", "denied")
        assert "hold stays" in first["charge_error"]
        # nobody settles the hold: when it expires it is charged at its estimate, and spend stays within the limit
        pool = connect_pool(postgres_url, size=1)
        try:
            assert PostgresLedger(pool).expire(datetime.now(UTC) + timedelta(minutes=6)) == 1
        finally:
            pool.close()
        spent, held = spent_and_held(postgres_url)
        assert held == 0 and estimate < spent <= 300
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')


@pytest.mark.slow
def test_redis_killed_during_a_call_still_answers_and_records_it(tmp_path: Path) -> None:
    import redis

    try:
        limits = running_redis()
        url = limits.__enter__()
    except Exception as error:  # noqa: BLE001 - no redis-server here
        pytest.skip(str(error))
    try:
        with start_upstream(tmp_path, tmp_path / "upstream.jsonl") as upstream:
            config = write_config(tmp_path, upstream.url, rate_limits=url)
            with start_gateway(tmp_path, config) as gateway:
                def kill() -> None:
                    try:
                        redis.Redis.from_url(url).shutdown(nosave=True)
                    except redis.ConnectionError:
                        pass  # the server went away as asked
                answer = during_slow_call(gateway, tmp_path / "upstream.jsonl", kill)
                after = chat(gateway, "small")  # Redis down at admission: refused, and recorded
        assert answer.status_code == 200, answer.text
        assert (after.status_code, after.json()["error"]["code"]) == (503, "state_unavailable")
        first, second = model_calls(tmp_path)
        assert (first["model"], first["status"]) == ("slow", "ok")
        assert "Redis" in first["limit_error"]
        assert (second["status"], second["http_status"]) == ("error", 503)
    finally:
        limits.__exit__(None, None, None)
