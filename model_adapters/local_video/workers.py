"""The long-lived frame-preparation threads, each running ATen single-threaded beside libx264's own threads."""

from __future__ import annotations

import ctypes
import functools
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

FRAME_WORKERS = 4  # composes that can prepare frames at once; more wait for a free worker
_frame_pool: ThreadPoolExecutor | None = None
_frame_pool_lock = threading.Lock()


@functools.cache
def _openmp_runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime torch loaded (Linux), to set one thread's team size."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if "/libgomp" in path or "/libiomp" in path:
                    return ctypes.CDLL(path)
    except OSError:
        pass
    return None


def _single_threaded_torch_here() -> None:
    """Make ATen ops issued from the calling thread run on that thread alone.

    Frame preparation runs beside libx264's own threads; an OpenMP team of its
    own would only contend with the encoder (and its idle workers spin). The
    team size is an OpenMP per-thread setting, so this leaves every other
    thread alone (``torch.set_num_threads`` would also change the default of
    threads started later). ATen initialises a thread's setting lazily on its
    first use, which would undo ours, hence the call to ``get_num_threads`` first.
    """
    torch.get_num_threads()
    runtime = _openmp_runtime()
    if runtime is not None:
        runtime.omp_set_num_threads(1)


def frame_workers() -> ThreadPoolExecutor:
    """Long-lived frame-preparation threads (made on first use, never at import).

    Long-lived because every new thread that runs ATen ops gets its own OpenMP
    state; short-lived producer threads per call were measured to slow each
    later call down.
    """
    global _frame_pool
    with _frame_pool_lock:
        if _frame_pool is None:
            _frame_pool = ThreadPoolExecutor(
                max_workers=FRAME_WORKERS, thread_name_prefix="video-frames", initializer=_single_threaded_torch_here
            )
        return _frame_pool
