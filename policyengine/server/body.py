"""Reading an ASGI request body: one owner of the size limit, the timeout and their errors."""

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


async def read_body(headers: dict[bytes, bytes], receive: Any, limit: int, timeout: float) -> bytes:
    """The whole body, refused with 413 past ``limit`` bytes (declared or sent) and 408 after ``timeout`` s."""
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, f"body of {int(declared)} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0

    async def read() -> None:
        nonlocal size
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
                return

    try:
        async with asyncio.timeout(timeout):  # no extra task per request, unlike wait_for
            await read()
    except TimeoutError:
        raise HTTPError(408, f"body not received within {timeout:g} s") from None
    return b"".join(chunks)
