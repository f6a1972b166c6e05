"""Run one piece of work in several threads released at the same moment: races on first use and shared state."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def together(count: int, work: Callable[[], Any]) -> list[Any]:
    """``work()`` in ``count`` threads released by one barrier; their results, in thread order.

    An exception in a thread is raised here once every thread has ended (a thread's own
    exception would otherwise only be printed, and the test would see a missing result).
    """
    start = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(slot: int) -> None:
        start.wait()
        try:
            results[slot] = work()
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            errors.append(error)

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
