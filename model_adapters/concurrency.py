"""Concurrency limits for adapters that may outlive an event loop."""

import asyncio
import threading
import weakref


class PerLoopSemaphores:
    """One asyncio.Semaphore per running event loop.

    An adapter object may outlive an event loop (tests, scripts calling
    ``asyncio.run`` repeatedly); an asyncio.Semaphore must not be shared across
    loops, so each loop gets its own, with the same limit.
    """

    def __init__(self, limit: int):
        self._limit = limit
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def get(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        with self._lock:
            sem = self._by_loop.get(loop)
            if sem is None:
                sem = asyncio.Semaphore(self._limit)
                self._by_loop[loop] = sem
            return sem
