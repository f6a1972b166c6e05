"""UpstreamClient.post: the same answers and errors over httpcore's pool and over httpx (a proxy in the env).

A whole answer goes over httpcore's connection pool unless a proxy is set in
the environment (only httpx reads it); both paths must give the same body, the
same 502 for an upstream 5xx, 4xx or an unreachable host, and 504 on timeout.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from gateway_process import received, start_upstream
from policyengine.gateway.config import Upstream
from policyengine.gateway.providers import UpstreamClient, UpstreamError


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("upstream")
    with start_upstream(folder, record=folder / "received.jsonl", lifetime=300) as process:
        yield process, folder / "received.jsonl"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def _upstream(base_url: str, model: str, timeout_s: float = 5.0) -> Upstream:
    return Upstream(model="m", base_url=base_url, upstream_model=model, api_key_env=None, timeout_s=timeout_s,
                    retries=0, fallbacks=(), max_tokens=16)


async def _post(upstream: Upstream) -> object:
    client = UpstreamClient()
    try:
        return await client.post(upstream, "/chat/completions", {"model": "m", "messages": [{"role": "user",
                                                                                            "content": "hi"}]})
    finally:
        await client.close()


CASES = [  # (upstream model or "<closed>", timeout, expected status or None for an answer)
    ("small-up", 5.0, None),
    ("fail500", 5.0, 502),
    ("<closed>", 5.0, 502),
    ("slow", 0.3, 504),
]


@pytest.mark.parametrize("proxy", [False, True], ids=["httpcore-pool", "httpx"])
@pytest.mark.parametrize(("model", "timeout", "status"), CASES, ids=[c[0] for c in CASES])
def test_post_answers_and_errors_alike(upstream, monkeypatch: pytest.MonkeyPatch, proxy: bool, model: str,
                                       timeout: float, status: int | None) -> None:
    process, record = upstream
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    if proxy:  # only makes the client choose httpx; loopback is exempt from proxying
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert (UpstreamClient()._pool is None) == proxy  # the path this case means to take
    base = f"http://127.0.0.1:{_closed_port()}/v1" if model == "<closed>" else process.url + "/v1"
    if status is None:
        answer = asyncio.run(_post(_upstream(base, model, timeout)))
        assert answer.body["choices"][0]["message"]["content"] == "Hello from the upstream."
        assert received(record)[-1]["body"]["model"] == model  # the upstream's model name replaced the caller's
    else:
        with pytest.raises(UpstreamError) as raised:
            asyncio.run(_post(_upstream(base, model, timeout)))
        assert raised.value.status == status
