"""How many threads cast rays, and running a ray kernel over ranges of rays on that many threads.

The numba kernels (``_raycast_numba.py``) are serial and release the GIL, so plain Python threads run
them side by side. Each thread takes the next chunk of rays from a shared counter until none are
left (an origin near the grid's edge has short rays, so equal halves would not balance); the calling
thread works too. Every ray writes only its own output column, so the result does not depend on the
thread count or on which thread cast which ray.

Thread count: ``threads`` arguments, else ``$FLASHOCC_RAY_THREADS``, else the cores this process may
run on (``os.sched_getaffinity``, which respects taskset / cgroup CPU sets; ``os.cpu_count`` does not).
"""
from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from flashocc.errors import ConfigError

ENV = "FLASHOCC_RAY_THREADS"
CHUNKS_PER_THREAD = 8          # chunks per thread: the last one to finish leaves the others idle briefly
MIN_CHUNK = 1024               # rays; a kernel call costs ~10 us of dispatch, 1024 rays ~0.2 ms of walking

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] | None = None        # (pid, workers): a forked child builds its own pool


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):        # not on Linux
        return max(1, os.cpu_count() or 1)


def ray_threads(threads: int | None = None) -> int:
    """The thread count to cast with: ``threads`` if given, else ``$FLASHOCC_RAY_THREADS``, else the cores."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"ray-casting threads: expected an integer >= 1, got {threads!r}")
        return threads
    value = os.environ.get(ENV, "").strip()
    if not value:
        return available_cores()
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"${ENV}: expected an integer >= 1 (threads casting RayIoU rays), found {value!r}")
    return n


def run_chunked(kernel: Callable[[int, int], None], count: int, threads: int) -> None:
    """Call ``kernel(start, stop)`` over chunks covering ``range(count)``, on ``threads`` threads."""
    chunk = max(MIN_CHUNK, -(-count // (threads * CHUNKS_PER_THREAD)))
    starts = range(0, count, chunk)
    if threads == 1 or len(starts) <= 1:
        kernel(0, count)
        return
    counter = itertools.count()               # next() on it is atomic under the GIL

    def work() -> None:
        while True:
            i = next(counter)
            if i >= len(starts):
                return
            kernel(starts[i], min(starts[i] + chunk, count))

    pool = _executor(threads - 1)
    futures = [pool.submit(work) for _ in range(min(threads, len(starts)) - 1)]
    try:
        work()
    finally:
        for f in futures:
            if not f.cancel():                # not started: nothing left for it anyway
                f.result()                    # running: wait, and re-raise its error


def _executor(workers: int) -> ThreadPoolExecutor:
    """The shared pool, with at least ``workers`` threads (callers submit at most what they asked for)."""
    global _pool, _pool_key
    pid = os.getpid()
    with _lock:
        if _pool is None or _pool_key[0] != pid or _pool_key[1] < workers:
            if _pool is not None and _pool_key[0] == pid:
                _pool.shutdown(wait=False)    # running tasks finish; the pool's threads then exit
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flashocc-rays")
            _pool_key = (pid, workers)
        return _pool
