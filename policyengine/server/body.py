"""The ASGI plumbing the server's apps share: reading a request body (one owner of the size limit, the timeout
and their errors) and answering the lifespan protocol."""

from __future__ import annotations

import asyncio
from typing import Any


class HTTPError(Exception):
    """A request refused with ``status``: the message, the problems found and extra headers go to the client."""

    def __init__(self, status: int, message: str, problems: list[str] | None = None,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problems = problems or []
        self.headers = headers or []


class _Deadlines:
    """Body reads under way on one event loop and when each must end; late ones are cancelled by one sweeper task.

    A timer per request (``asyncio.timeout``) costs ~4 us a request to arm and
    disarm, while almost every body has arrived with its headers; here a read
    costs two dict operations and the sweeper wakes a few times per timeout.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reading: dict[asyncio.Task[Any], float] = {}  # task -> loop.time() by which its body must be in
        self.expired: set[asyncio.Task[Any]] = set()
        self.period = 1.0
        self.sweeper: asyncio.Task[None] | None = None

    def watch(self, task: asyncio.Task[Any], timeout: float) -> None:
        self.reading[task] = self.loop.time() + timeout
        if timeout / 4 < self.period:
            self.period = max(timeout / 4, 0.01)
        if self.sweeper is None or self.sweeper.done():
            self.sweeper = self.loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        while self.reading:
            await asyncio.sleep(self.period)
            now = self.loop.time()
            for task, due in list(self.reading.items()):
                if due <= now and task not in self.expired:
                    self.expired.add(task)
                    task.cancel()


_deadlines: dict[asyncio.AbstractEventLoop, _Deadlines] = {}


async def read_body(headers: dict[bytes, bytes], receive: Any, limit: int, timeout: float) -> bytes:
    """The whole body, refused with 413 past ``limit`` bytes (declared or sent) and 408 after ``timeout`` s."""
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, f"body of {int(declared)} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    task = asyncio.current_task()
    assert task is not None
    loop = task.get_loop()
    deadlines = _deadlines.get(loop)
    if deadlines is None:
        for old in [old for old in _deadlines if old.is_closed()]:
            del _deadlines[old]
        deadlines = _deadlines[loop] = _Deadlines(loop)
    deadlines.watch(task, timeout)
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "client went away before the body was complete")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
    except asyncio.CancelledError:
        if task not in deadlines.expired:
            raise  # cancelled by someone else (shutdown): not ours to turn into an answer
        deadlines.expired.remove(task)
        task.uncancel()
        raise HTTPError(408, f"body not received within {timeout:g} s") from None
    finally:
        del deadlines.reading[task]  # the sweeper runs on this loop, so it cancels only a task waiting above
    return b"".join(chunks)


async def answer_lifespan(receive: Any, send: Any) -> None:
    """Acknowledge ASGI startup and shutdown: the apps hold nothing that starts or stops with the server."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
