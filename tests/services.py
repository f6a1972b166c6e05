"""Throwaway PostgreSQL and Redis servers for tests, on 127.0.0.1 in a temp directory.

Session-scoped: each server starts once per test run (initdb ~1-2 s) and is
stopped at the end; every test gets a fresh database. A test that needs a
server is marked ``postgres`` or ``redis`` and is skipped, with the reason,
only when the server truly cannot start (binaries missing, start failed).
Servers run as ``nobody`` when the tests run as root (PostgreSQL refuses root).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``"1m"``) mounted at ``mount`` for a disk-full test; skipped, with the reason, where
    it cannot be mounted (not root, no mount(8), or the kernel refuses)."""
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return found[-1] if found else shutil.which(name)


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "nobody", "--", *cmd]
    return cmd


def _tail(path: Path) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-3:])
    except OSError:
        return ""


class ServerUnavailable(Exception):
    """The server cannot start here (the reason is the message)."""


@contextmanager
def running_postgres() -> Iterator[str]:
    """Start a throwaway PostgreSQL server; yields its URL (database ``postgres``, user ``postgres``, trust auth)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise ServerUnavailable("PostgreSQL is not installed (no initdb/pg_ctl under /usr/lib/postgresql/*/bin)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ServerUnavailable("psycopg is not installed (pip install -e '.[dev]')") from None
    root = Path(tempfile.mkdtemp(prefix="policyengine-pg-"))
    root.chmod(0o755)
    data, log = root / "data", root / "server.log"
    data.mkdir()
    log.touch()
    if os.geteuid() == 0:
        for p in (root, data, log):
            shutil.chown(p, "nobody", "nogroup")
    port = free_port()
    try:
        init = subprocess.run(_as_server_user([initdb, "-D", str(data), "-U", "postgres", "--auth=trust",
                                               "-E", "UTF8", "--no-sync"]),
                              capture_output=True, text=True, timeout=120)
        if init.returncode != 0:
            raise ServerUnavailable(f"PostgreSQL initdb failed: {init.stderr.strip().splitlines()[-1:]}")
        opts = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=120")
        start = subprocess.run(_as_server_user([pg_ctl, "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60",
                                                "start"]), capture_output=True, text=True, timeout=90)
        if start.returncode != 0:
            raise ServerUnavailable(f"PostgreSQL did not start: {_tail(log)}")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _running_or_skip(running: Callable[[], AbstractContextManager[str]]) -> Iterator[str]:
    """A session fixture's body: the server's URL, or a skip naming why it cannot start here."""
    try:
        server = running()
        url = server.__enter__()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of a running throwaway PostgreSQL server, for the whole test session."""
    yield from _running_or_skip(running_postgres)


_db_numbers = itertools.count(1)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    import psycopg

    name = f"t{os.getpid()}_{next(_db_numbers)}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres_server.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def running_redis() -> Iterator[str]:
    """Start a throwaway Redis server (no persistence); yields its URL."""
    binary = shutil.which("redis-server")
    if not binary:
        raise ServerUnavailable("redis-server is not installed (apt-get install redis-server)")
    try:
        import redis
    except ImportError:
        raise ServerUnavailable("redis (redis-py) is not installed (pip install -e '.[dev]')") from None
    root = Path(tempfile.mkdtemp(prefix="policyengine-redis-"))
    port = free_port()
    log = root / "server.log"
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(root), "--logfile", str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        for _ in range(100):
            if proc.poll() is not None:
                raise ServerUnavailable(f"redis-server exited: {_tail(log)}")
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            raise ServerUnavailable(f"redis-server did not answer within 5 s: {_tail(log)}")
        client.close()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL of a running throwaway Redis server, for the whole test session."""
    yield from _running_or_skip(running_redis)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, emptied before the test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server
