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


def header_map(raw: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """The request's headers by name; a name sent more than once maps to its values joined by ``, `` (RFC 9110
    5.3), so no reader takes one of several lines and ignores the others: two ``Authorization`` lines are no
    bearer token (``Bearer a, Bearer b``), two ``Content-Type`` lines no single charset."""
    headers = dict(raw)
    if len(headers) == len(raw):
        return headers
    joined: dict[bytes, bytes] = {}
    for name, value in raw:
        joined[name] = joined[name] + b", " + value if name in joined else value
    return joined


_UTF8 = (b"utf-8", b"utf8")


def check_encoding(headers: dict[bytes, bytes]) -> None:
    """415 for a body the server would read otherwise than its sender wrote it: compressed (a ``Content-Encoding``
    other than ``identity``: the server does not inflate bodies, so it would decide on other bytes than a proxy
    that does) or in a declared ``charset`` other than UTF-8 (the server reads UTF-8 only: ``é`` sent as Latin-1
    would be another id). A body that declares nothing is read as UTF-8 JSON, whatever its ``Content-Type``."""
    encoding = headers.get(b"content-encoding")
    if encoding is not None and encoding.strip().lower() not in (b"", b"identity"):
        shown = encoding.decode("latin-1")[:40]
        raise HTTPError(415, "unsupported body encoding",
                        [f"Content-Encoding {shown!r}: not read here; send the body uncompressed"])
    content_type = headers.get(b"content-type")
    if content_type is None or b"charset" not in content_type.lower():
        return
    for parameter in content_type.split(b";")[1:]:
        name, _, value = parameter.partition(b"=")
        if name.strip().lower() == b"charset" and value.strip().strip(b'"').strip().lower() not in _UTF8:
            shown = value.strip().decode("latin-1")[:40]
            raise HTTPError(415, "unsupported body encoding",
                            [f"Content-Type charset {shown!r}: bodies are read as UTF-8; send UTF-8 and say so "
                             "(or say no charset)"])


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
