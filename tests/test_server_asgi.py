"""The server's apps as plain ASGI callables, as another ASGI server would mount them.

``serve`` runs uvicorn with the lifespan protocol off, so only a server that
sends lifespan events (hypercorn, granian, a mount in another app) reaches this
path: each app must acknowledge startup and shutdown, or that server never
starts serving.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from policyengine.audit import generate_key
from policyengine.server.app import DecisionApp
from policyengine.server.inbox import InboxApp, InboxConfig
from policyengine.server.metrics import Metrics


def lifespan(app) -> list[dict]:
    """What ``app`` sends when told the server starts and then stops."""
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send), 5))
    return sent


def decision_app(tmp_path: Path) -> DecisionApp:
    return DecisionApp(holder=None, audit=None, metrics=Metrics(lambda: 0))  # type: ignore[arg-type]  # not read


def inbox_app(tmp_path: Path) -> InboxApp:
    generate_key(tmp_path / "k.key")
    return InboxApp(InboxConfig(db=tmp_path / "a.duckdb", key=tmp_path / "k.key"))


@pytest.mark.parametrize("make", [decision_app, inbox_app], ids=["decision server", "inbox"])
def test_each_app_acknowledges_startup_and_shutdown(tmp_path: Path, make) -> None:
    assert lifespan(make(tmp_path)) == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
