"""Timing and memory helpers for ``flashocc bench``: medians of wall time, peak memory growth of a block,
and running a measurement in a fresh process."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import torch

from flashocc.cpu_memory import freed_memory_is_kept
from flashocc.device import max_memory_allocated, memory_allocated, reset_peak_memory, synchronize


class PeakMemory:
    """Peak growth of memory while the block runs: the accelerator allocator's peak, sampled RSS on the CPU,
    and None on an accelerator whose allocator keeps no peak (MPS) or on a CPU whose freed memory is kept
    for reuse (``flashocc.cpu_memory``: the block may grow into pages it does not add to the RSS)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_mib = device, 0.0

    @staticmethod
    def rss_bytes() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def __enter__(self) -> PeakMemory:
        if self.device.type != "cpu":
            synchronize(self.device)
            self._base = memory_allocated(self.device) if reset_peak_memory(self.device) else None
            return self
        self._thread = None
        if freed_memory_is_kept():  # RSS growth shows no peak then: nothing to sample
            return self
        self._base = self._peak = self.rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, self.rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.type != "cpu":
            synchronize(self.device)
            peak = max_memory_allocated(self.device)
            self.peak_mib = None if self._base is None or peak is None else (peak - self._base) / 2**20
            return
        if self._thread is None:
            self.peak_mib = None
            return
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(0, max(self._peak, self.rss_bytes()) - self._base) / 2**20


def sync(device: torch.device) -> None:
    synchronize(device)


def time_call(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def isolated(fn: Callable, *args):
    """``fn(*args)`` in a fresh spawned process, so its peak memory is its own: freed CPU memory stays
    in the allocator and would hide the next measurement's growth in-process."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)
