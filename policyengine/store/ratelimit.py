"""Rate limits (requests or tokens per minute): in-process by default, shared through Redis.

Fixed windows: the budget of ``limit`` per ``per`` seconds restarts at every
multiple of ``per`` since the Unix epoch (UTC). An acquisition is admitted only
if the window's count plus ``amount`` stays within ``limit``, checked and
counted in one step (a lock in-process; a Lua script, atomic on the server, in
Redis). A refused acquisition counts nothing. At a window boundary a caller
can use up to twice ``limit`` within ``per`` seconds (the price of fixed windows:
one counter per key, no per-request log).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Protocol, runtime_checkable

from .files import StoreError


def _epoch(now: datetime | float | None) -> float:
    if now is None:
        return time.time()
    if isinstance(now, datetime):
        from ..budgets import utc
        return utc(now).timestamp()
    return float(now)


@runtime_checkable
class RateLimiter(Protocol):
    def acquire(self, key: str, amount: float = 1, *, limit: float, per: float = 60.0,
                now: datetime | float | None = None) -> bool:
        """Count ``amount`` against ``key``'s current window; False (nothing counted) if over ``limit``."""
        ...

    def used(self, key: str, *, per: float = 60.0, now: datetime | float | None = None) -> float:
        """What ``key`` has used in the current window."""
        ...


class InProcessRateLimiter:
    """Fixed-window counters in this process's memory (the default; one process)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, float], tuple[int, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, amount: float = 1, *, limit: float, per: float = 60.0,
                now: datetime | float | None = None) -> bool:
        window = int(_epoch(now) // per)
        with self._lock:
            held = self._counts.get((key, per))
            if held and held[0] > window:  # that window has ended (only its count is kept): nothing to count in
                return False
            used = held[1] if held and held[0] == window else 0.0
            if used + amount > limit:
                return False
            self._counts[(key, per)] = (window, used + amount)
            return True

    def used(self, key: str, *, per: float = 60.0, now: datetime | float | None = None) -> float:
        window = int(_epoch(now) // per)
        with self._lock:
            held = self._counts.get((key, per))
        return held[1] if held and held[0] == window else 0.0


_ACQUIRE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if used + amount > tonumber(ARGV[2]) then
  return 0
end
redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class RedisRateLimiter:
    """Fixed-window counters in Redis, shared by every process and host using the same server.

    Keys are ``<prefix><key>:<per>:<window number>`` and expire one window after it ends.
    """

    def __init__(self, url: str, *, prefix: str = "policyengine:rate:") -> None:
        try:
            import redis
        except ImportError:
            raise StoreError("Redis rate limits need redis-py: pip install 'policyengine[redis]'") from None
        self._redis = redis
        self.url = url
        self.prefix = prefix
        self._client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10)
        try:
            self._script = self._client.register_script(_ACQUIRE)
            self._client.ping()
        except redis.RedisError as exc:
            raise StoreError(f"{url.split('@')[-1]}: cannot reach Redis ({exc})") from None

    def _key(self, key: str, per: float, now: datetime | float | None) -> str:
        return f"{self.prefix}{key}:{per:g}:{int(_epoch(now) // per)}"

    def acquire(self, key: str, amount: float = 1, *, limit: float, per: float = 60.0,
                now: datetime | float | None = None) -> bool:
        try:
            return bool(self._script(keys=[self._key(key, per, now)], args=[amount, limit, int(per * 2000)]))
        except self._redis.RedisError as exc:
            raise StoreError(f"rate limiter: Redis failed ({exc}); refusing") from None

    def used(self, key: str, *, per: float = 60.0, now: datetime | float | None = None) -> float:
        value = self._client.get(self._key(key, per, now))
        return float(value) if value is not None else 0.0

    def close(self) -> None:
        self._client.close()


def open_rate_limiter(url: str | None = None) -> RateLimiter:
    """In-process limits when ``url`` is None; ``redis://...`` (or ``rediss://``) for limits shared through Redis."""
    if url is None:
        return InProcessRateLimiter()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisRateLimiter(url)
    raise StoreError(f"{url}: unknown rate-limit store (use redis://HOST:PORT/DB)")
