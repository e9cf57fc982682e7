"""Concurrency limits for adapters that may outlive an event loop, the per-device compute slot,
and the caller's hold on a hosted provider (`provider_turn`)."""

import asyncio
import contextlib
import contextvars
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any


class PerLoopSemaphores:
    """One asyncio.Semaphore per running event loop.

    An adapter object may outlive an event loop (tests, scripts calling
    ``asyncio.run`` repeatedly); an asyncio.Semaphore must not be shared across
    loops, so each loop gets its own, with the same limit.
    """

    def __init__(self, limit: int):
        self._limit = limit
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        with self._lock:
            sem = self._by_loop.get(loop)
            if sem is None:
                sem = asyncio.Semaphore(self._limit)
                self._by_loop[loop] = sem
            return sem


class ComputeSlots:
    """One slot per compute device, shared by every local adapter in the process.

    The local image, refine and video adapters each use every core of the
    device they run on (torch's intra-op threads, x264's threads). When a
    campaign's stages pipeline, running two of them at once on the same device
    only makes them thrash, so each holds the device's slot while it computes;
    espeak (one thread) and I/O go on beside them. A CUDA model and a CPU
    encode hold different slots, so on a GPU machine they overlap.

    `held_s` adds up how long each adapter held a slot: its compute time
    without the wait (the benchmark's per-stage seconds).
    """

    def __init__(self) -> None:
        self._slots: dict[str, PerLoopSemaphores] = {}
        self._lock = threading.Lock()
        self.held_s: dict[str, float] = {}

    def _semaphore(self, device: str) -> asyncio.Semaphore:
        with self._lock:
            if device not in self._slots:
                self._slots[device] = PerLoopSemaphores(1)
            return self._slots[device].get()

    @contextlib.asynccontextmanager
    async def hold(self, device: str, holder: str) -> AsyncIterator[None]:
        async with self._semaphore(device.split(":")[0]):
            started = time.perf_counter()
            try:
                yield
            finally:
                with self._lock:
                    self.held_s[holder] = self.held_s.get(holder, 0.0) + time.perf_counter() - started


COMPUTE_SLOTS = ComputeSlots()


# --- the caller's hold on a provider --------------------------------------------------------

ProviderHold = Callable[[], contextlib.AbstractAsyncContextManager[Any]]

# What a caller holds a provider by (its concurrency slot and request rate), set for one call by
# a caller whose adapter marks its turn (`marks_provider_turn`); None: nothing to enter here.
_PROVIDER_HOLD: contextvars.ContextVar[ProviderHold | None] = contextvars.ContextVar("provider_hold", default=None)


@contextlib.contextmanager
def provider_held_by(hold: ProviderHold) -> Iterator[None]:
    """For the call made inside: the adapter's `provider_turn` enters `hold` (the caller's slot
    and rate) only around the part of the call that talks to the provider."""
    token = _PROVIDER_HOLD.set(hold)
    try:
        yield
    finally:
        _PROVIDER_HOLD.reset(token)


@contextlib.asynccontextmanager
async def provider_turn() -> AsyncIterator[None]:
    """Where an adapter talks to its provider (requests, polls, downloads): the caller's slot is
    held only in here, so preparing the request before and decoding and checking the answer
    after leave it to the next call. Re-entrant: a turn inside a turn holds nothing more."""
    hold = _PROVIDER_HOLD.get()
    if hold is None:
        yield
        return
    async with hold():
        token = _PROVIDER_HOLD.set(None)
        try:
            yield
        finally:
            _PROVIDER_HOLD.reset(token)


def onnx_session_options() -> Any:
    """onnxruntime session options for the local voices: idle intra-op threads sleep rather than
    spin. Spinning buys a little latency on an idle machine and burns a core's worth of waiting
    beside other work (run workers, checks, a second voice): measured on 2 cores, six Piper
    voiceovers took 19 % less CPU without it (23 % beside two busy loops) and no longer."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options
