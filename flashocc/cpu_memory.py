"""Keep freed CPU memory in the process for reuse (glibc), so large activations stop page-faulting.

PyTorch's CPU allocator does not cache: every activation tensor is a fresh ``malloc``, and glibc serves
blocks above its mmap threshold (128 KiB to 32 MiB, adaptive) with a new ``mmap`` that is unmapped again
on ``free``. Each forward therefore touches its large activations' pages for the first time, one page
fault per 4 KiB: a (6, 256, 64, 176) fp32 output is 69 MB, 17,000 faults. On the 2-core CPU of
docs/benchmarks.md ("CPU allocator") that made a 64->256 1x1 convolution 2.6x slower, the M0 eager
forward 1.40x slower and the fused one 1.19x.

``reuse_freed_memory()`` tells glibc to serve every block from its heap (``M_MMAP_MAX = 0``) and to keep
up to 2 GiB of freed heap memory instead of returning it to the system (``M_TRIM_THRESHOLD``), so the
second forward reuses the first one's pages, and sets the same two settings as glibc's environment
variables for the processes this one starts (spawned data-loader workers, ``flashocc bench``'s isolated
measurements). The price: the process keeps its peak memory until it exits. It is process-wide,
so it is opt-in (``flashocc eval / predict / bench --reuse-memory``); the environment variables
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`` do the same for any program. Elsewhere than glibc
(macOS, musl, Windows) it changes nothing and says so; jemalloc or tcmalloc (``LD_PRELOAD``) cache too.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# <malloc.h>: the mallopt parameter numbers (stable glibc ABI).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def reuse_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (module docstring). True if applied; False where the C
    library is not glibc or refused a setting (nothing is changed then beyond the settings it took)."""
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; the trim threshold takes an int, so INT_MAX (2 GiB of free heap kept).
    applied = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
    if applied:  # read by glibc when a child process starts
        os.environ["MALLOC_MMAP_MAX_"] = "0"
        os.environ["MALLOC_TRIM_THRESHOLD_"] = str(_INT_MAX)
    return applied


def freed_memory_is_kept() -> bool:
    """True once ``reuse_freed_memory`` applied here or in a parent process: growth of the resident set then
    no longer shows a block's peak (its pages may be reused ones), so ``flashocc bench`` reports none."""
    return os.environ.get("MALLOC_MMAP_MAX_") == "0"


__all__ = ["freed_memory_is_kept", "reuse_freed_memory"]
