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


# (seconds after T0 the call was admitted, seconds after T0 its usage was known): a call of estimate 900 tokens
# against 1,000 per minute that used 10. The next window owes nothing to one that ended: when the answer
# arrives after the window that counted the estimate, giving the 890 back must not open 1,890 in the new one.
CALLS = [(30, 50), (59, 61), (59, 179)]


@pytest.mark.parametrize("kind", ["in-process", pytest.param("redis", marks=pytest.mark.redis)])
@pytest.mark.parametrize("admitted_at, settled_at", CALLS)
def test_a_smaller_usage_gives_back_only_in_the_window_that_counted_the_estimate(kind, request, monkeypatch,
                                                                                 admitted_at, settled_at):
    from policyengine.gateway import traffic

    limiter = InProcessRateLimiter() if kind == "in-process" else RedisRateLimiter(request.getfixturevalue("redis_url"))
    key = f"gateway:key:tokens:{admitted_at}:{settled_at}"
    counter = traffic.Counter(key, "tokens", 1_000, 60.0, "key", "<rate-limit:key>")
    clock = [T0 + admitted_at]
    monkeypatch.setattr("time.time", lambda: clock[0])
    taken = traffic.acquire(limiter, [counter], 900)
    clock[0] = T0 + settled_at
    traffic.correct_tokens(limiter, taken, 10)
    room = 1_000 - (10 if settled_at < 60 else 0)  # the same window keeps the 10 used; a later one starts empty
    with pytest.raises(traffic.Refused):
        traffic.acquire(limiter, [counter], room + 1)
    assert traffic.acquire(limiter, [counter], room)


def test_an_ended_window_takes_nothing_and_leaves_the_current_count_alone():
    """The in-process limiter keeps one window per key: a late give-back for the window before must not
    replace the current window's count (which would start it again from nothing)."""
    limiter = InProcessRateLimiter()
    assert limiter.acquire("k", 900, limit=1_000, per=60, now=T0 + 61)
    assert not limiter.acquire("k", -500, limit=1e18, per=60, now=T0 + 59)
    assert limiter.used("k", per=60, now=T0 + 62) == 900
    assert not limiter.acquire("k", 101, limit=1_000, per=60, now=T0 + 62)
