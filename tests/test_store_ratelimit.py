"""Rate limits: fixed windows, atomic across threads (in-process) and processes (Redis started by the tests)."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from policyengine.store.ratelimit import InProcessRateLimiter, RedisRateLimiter, open_rate_limiter

T0 = 1_800_000_000.0  # a window boundary for per=60 (divisible by 60)

# (seconds after T0, amount, admitted) for limit 100 tokens per 60 s
SCRIPT = [
    (0, 60, True),
    (10, 40, True),     # exactly the limit
    (20, 1, False),     # over: refused and not counted
    (59.9, 1, False),
    (60, 100, True),    # a new window
    (61, 0.5, False),
    (130, 101, False),  # larger than the limit on its own
    (131, 100, True),
]


@pytest.mark.parametrize("kind", ["in-process", pytest.param("redis", marks=pytest.mark.redis)])
def test_fixed_window_admits_within_the_limit(kind, request):
    limiter = InProcessRateLimiter() if kind == "in-process" else RedisRateLimiter(request.getfixturevalue("redis_url"))
    for offset, amount, admitted in SCRIPT:
        assert limiter.acquire("gateway:team-a:tokens", amount, limit=100, per=60, now=T0 + offset) is admitted, offset
    assert limiter.used("gateway:team-a:tokens", per=60, now=T0 + 131) == 100
    assert limiter.used("gateway:team-b:tokens", per=60, now=T0 + 131) == 0


def test_threads_share_an_in_process_limit():
    limiter = open_rate_limiter(None)
    admitted = []
    gate = threading.Barrier(64)

    def call():
        gate.wait()
        if limiter.acquire("k", 1, limit=30, per=60, now=T0):
            admitted.append(1)

    threads = [threading.Thread(target=call) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 30


CLIENT = r"""
import sys, threading
from policyengine.store.ratelimit import open_rate_limiter
limiter = open_rate_limiter(sys.argv[1])
gate, got = threading.Barrier(25), []
def call():
    gate.wait()
    if limiter.acquire("gateway:requests", 1, limit=30, per=60, now=1_800_000_000.0):
        got.append(1)
threads = [threading.Thread(target=call) for _ in range(25)]
[t.start() for t in threads]
[t.join() for t in threads]
print(len(got))
"""


@pytest.mark.redis
def test_four_processes_share_a_redis_limit(redis_url):
    procs = [subprocess.Popen([sys.executable, "-c", CLIENT, redis_url], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    counts = [int(p.communicate(timeout=60)[0]) for p in procs]
    assert sum(counts) == 30  # 100 requests from 4 processes, 30 allowed per minute
    assert RedisRateLimiter(redis_url).used("gateway:requests", per=60, now=T0) == 30


def test_unknown_rate_limit_url_is_refused():
    from policyengine.store import StoreError
    with pytest.raises(StoreError, match="unknown rate-limit store"):
        open_rate_limiter("memcached://localhost")
